"""The evaluator's tools: the registry client (list, pull), model directories, evaluate, predict, export.

``registry_client`` and ``pull`` talk to a model registry (the contract of
:mod:`fedward.common.registry_api`) and write a pulled folder (``pulled_layout``);
``model_dir`` opens and verifies a pulled folder or run directory (``weights_integrity``)
and says which operating point its classifier is used at (``card_operating_point``: the
temperature and thresholds the run chose on validation), ``loaded_model`` loads its
network; ``evaluate`` (with ``labelled_data``, ``roc`` and ``calibration_report``),
``predict`` and the exports (``export_formats``, ``model_export``, ``monai_bundle``) use it. ``input_kind``
reads what kind of image each input is (modality, channels, 2D or 3D) for the modality
guard that ``predict`` and ``evaluate`` apply.

Segmentation models have their own modules, chosen once where a command starts:
``seg_input`` (preprocessing and the way back to the input's voxels), ``segmenter``
(probabilities, sliding windows for volumes), ``seg_predict`` (PNG, NIfTI, DICOM SEG),
``seg_evaluate`` (with ``labelled_masks`` and ``overlay``) and ``seg_bundle`` (with
``seg_transforms``) for the MONAI bundle.
"""
