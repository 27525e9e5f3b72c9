"""What reaches the clinic: the PDF report, DICOM results, the HTTP service and the DICOM node."""
