"""The Modality Worklist: steps made by HL7 orders, worklist files, MWL matching, MPPS and the HL7 message log."""
