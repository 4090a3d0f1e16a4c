"""hl7 package."""
