"""appliance: a DICOM store / worklist node that publishes patient discs."""

__version__ = "0.1.0"
