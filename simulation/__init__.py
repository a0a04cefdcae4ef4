"""Whole federations on one machine: partitions, the driver, the baseline, DICOM export.

Researchers simulate hospitals with realistic splits (``partition``), run them on Flower's
simulation runtime (``driver``, ``local_link``), compare with the pooled-data upper bound
(``centralized``) and export datasets as per-hospital DICOM folders (``dicom_export``).
"""
