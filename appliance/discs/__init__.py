"""Disc publishing: routing by AE title, delayed groups, disc authoring (IHE PDI), spanning and jobs."""
