"""Hospital data: MedMNIST .npz, DICOM and PNG/JPEG folders, the decode cache, hospital splits
and the batch pipeline.
"""
