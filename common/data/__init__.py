"""Hospital data: readers, the decode cache, hospital splits and the batch pipeline.

MedMNIST ``.npz`` files, DICOM and PNG/JPEG folders (with ``labels.csv`` or class
sub-folders), partition plans of simulated hospitals, and the augmentation that runs on
whole batches.
"""
