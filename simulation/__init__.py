"""Whole federations on one machine: hospital partitions, the simulation driver, the
centralized baseline, DICOM export.
"""
