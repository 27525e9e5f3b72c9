"""Reading films: image files and DICOM, the patient header, the input gate, case tables, CSV safety."""
