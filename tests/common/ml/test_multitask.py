"""Classes learnt with lesion masks (``data.target = "class+mask"``, ``unet-multitask``): data to training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.dicom_folders import write_dicom_folder
from fixtures.seg_folders import BUSI_CASES, busi_subset
from fixtures.synthetic import write_npz
from safetensors.torch import save_file
from torch import nn

from fedward.common.choices import ModelName, SegLoss, TargetKind, Task
from fedward.common.config import load_config
from fedward.common.data.dicom import Reason
from fedward.common.data.images import BatchPipeline, ImageDataset, concat_datasets, make_dataset
from fedward.common.data.load import load_site_folder
from fedward.common.data.maskfolder import read_mask_folder
from fedward.common.data.masksplit import MaskSplit
from fedward.common.data.npz import ArraySplit
from fedward.common.data.sources import read_folder_dataset
from fedward.common.errors import ConfigError, DataError
from fedward.common.ml.multitask import LesionGuidedHead, LesionGuidedLoss
from fedward.common.ml.networks import build_network, load_initial_weights
from fedward.common.ml.segment import make_seg_loss
from fedward.common.ml.tasks import head_for
from fedward.common.ml.training import LocalTraining, train_epochs
from fedward.common.ml.unet_encoder import LesionPooledClassifier, UNetMultitask
from fedward.common.runsetup import Setting, resolve_run
from fedward.common.schema import DatasetSchema

SIZE = 64
BUSI3 = DatasetSchema(Task.MULTICLASS, ("benign", "malignant", "normal"), 1)
BINARY = DatasetSchema(Task.BINARY, ("normal", "pneumonia"), 1)


def multitask_config(**extra: object) -> object:
    return load_config(
        None, {"data.target": "class+mask", "model.name": "unet-multitask", "data.image-size": SIZE, **extra}
    )


def test_class_and_mask_target_reads_classes_with_the_segmentation_masks(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    both = read_mask_folder(folder, image_size=SIZE, target=TargetKind.CLASS_AND_MASK)
    masks = read_mask_folder(folder, image_size=SIZE, target=TargetKind.MASK)
    classes = read_mask_folder(folder, image_size=SIZE, target=TargetKind.CLASS)
    assert both.schema == classes.schema and both.schema.task is Task.MULTICLASS
    for split, arrays in both.splits.items():
        assert isinstance(arrays, ArraySplit) and arrays.masks is not None
        assert arrays.masks.dtype == np.uint8 and arrays.masks.shape == arrays.images.shape
        np.testing.assert_array_equal(arrays.images, classes.splits[split].images)
        np.testing.assert_array_equal(arrays.labels, classes.splits[split].labels)
        segmentation = masks.splits[split]
        assert isinstance(segmentation, MaskSplit)
        np.testing.assert_array_equal(arrays.masks, segmentation.masks)  # the union of an image's masks
    normal = both.splits["train"].labels[:, 0] == 2
    assert both.splits["train"].masks[normal].sum() == 0  # "normal": an empty mask, still a case


def test_a_case_without_mask_is_named_and_the_others_are_read(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi", BUSI_CASES, splits=False)
    (folder / "malignant" / "malignant (1)_mask.png").unlink()
    read = read_mask_folder(folder, image_size=SIZE, target=TargetKind.CLASS_AND_MASK)
    assert [(p.file, p.reason) for p in read.problems] == [("malignant/malignant (1).png", Reason.MASK_MISSING)]
    assert len(read.splits["train"]) == len(BUSI_CASES) - 1


def test_prepared_cache_keeps_the_masks(tmp_path: Path) -> None:
    folder = busi_subset(tmp_path / "busi")
    data = multitask_config().data  # type: ignore[attr-defined]
    first = read_folder_dataset(folder, data, cache_root=tmp_path / "cache")
    again = read_folder_dataset(folder, data, cache_root=tmp_path / "cache")
    assert list((tmp_path / "cache").rglob("*.npz"))
    for split, arrays in first.splits.items():
        cached = again.splits[split]
        assert isinstance(arrays, ArraySplit) and isinstance(cached, ArraySplit) and cached.masks is not None
        np.testing.assert_array_equal(cached.masks, arrays.masks)
    plain = read_folder_dataset(
        folder, load_config(None, {"data.image-size": SIZE}).data, cache_root=tmp_path / "cache"
    )
    assert all(isinstance(s, ArraySplit) and s.masks is None for s in plain.splits.values())


def lesion_batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    masks = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.uint8)
    for i in range(n):
        masks[i, 0, 10 + 3 * i : 40 + 2 * i, 8 + 4 * i : 30 + 3 * i] = 1
    return masks * 255, torch.arange(n) % 3, masks


def test_pipeline_warps_each_mask_with_its_image_and_draws_as_classification_does() -> None:
    images, labels, masks = lesion_batch()
    pipeline = BatchPipeline(augment=True).train()
    x, (y, warped) = pipeline.pair(images, (labels, masks), torch.Generator().manual_seed(5))
    plain, same_labels = pipeline.pair(images, labels, torch.Generator().manual_seed(5))
    assert torch.equal(x, plain) and torch.equal(y, labels) and torch.equal(same_labels, labels)
    assert warped.dtype == torch.int64 and warped.shape == masks.shape
    assert not torch.equal(warped, masks.long())  # rotated, zoomed, maybe flipped
    image_lesion, mask_lesion = x > 0.5, warped.bool()
    iou = (image_lesion & mask_lesion).sum() / (image_lesion | mask_lesion).sum()
    assert iou > 0.9  # the same affine (bilinear image, nearest mask)
    x_eval, (_, kept) = pipeline.eval().pair(images, (labels, masks))
    assert torch.equal(kept, masks.long()) and torch.equal(x_eval, images.float() / 255)


def test_dataset_items_carry_the_mask_and_pool(tmp_path: Path) -> None:
    images, labels, masks = lesion_batch()
    split = ArraySplit(images[:, 0].numpy(), labels.numpy().reshape(-1, 1), masks[:, 0].numpy())
    dataset = make_dataset(split, BUSI3, SIZE)
    image, (label, mask) = dataset[1]
    assert image.shape == (1, SIZE, SIZE) and int(label) == 1 and torch.equal(mask, masks[1])
    pooled = concat_datasets([dataset, make_dataset(split.subset(np.array([0, 2])), BUSI3, SIZE)])
    assert isinstance(pooled, ImageDataset) and pooled.masks is not None and len(pooled.masks) == 6
    plain = make_dataset(ArraySplit(split.images, split.labels), BUSI3, SIZE)
    classes_only = concat_datasets([plain, plain])  # pooling without masks (the centralized baseline) as before
    assert isinstance(classes_only, ImageDataset) and classes_only.masks is None and len(classes_only) == 8
    with pytest.raises(DataError, match=r"data\.image-size 128"):
        make_dataset(split, BUSI3, 128)
    with pytest.raises(ValueError, match="without lesion masks"):
        concat_datasets([dataset, make_dataset(ArraySplit(split.images, split.labels), BUSI3, SIZE)])


def test_network_classifies_in_eval_mode_with_what_training_computes() -> None:
    torch.manual_seed(0)
    model = UNetMultitask(1, 3, dropout=0.0)
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        class_logits, lesion_logits = model.train()(x)
        assert class_logits.shape == (2, 3) and lesion_logits.shape == (2, 2, SIZE, SIZE)
        scored = model.eval()(x)
    torch.testing.assert_close(scored, class_logits)
    traced = torch.jit.trace(model, x)  # type: ignore[no-untyped-call]  # exports see the classifier
    torch.testing.assert_close(traced(x), scored)


def test_classifier_pools_the_features_inside_the_predicted_lesion() -> None:
    head = LesionPooledClassifier(features=2, num_outputs=3, dropout=0.0)
    bottleneck = torch.zeros(1, 2, 4, 4)
    bottleneck[0, 0, :2, :2] = 8.0  # channel 0 is high where the lesion is
    bottleneck[0, 1] = 1.0
    lesion_logits = torch.full((1, 2, 16, 16), -20.0)
    lesion_logits[0, 1, :8, :8] = 20.0  # lesion: the top-left quadrant
    lesion_logits[0, 0, :8, :8] = -20.0
    lesion_logits[0, 0, 8:, :] = lesion_logits[0, 0, :, 8:] = 20.0
    captured: list[torch.Tensor] = []
    head.linear.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    head(bottleneck, lesion_logits)
    whole, inside, extent = captured[0][0, :2], captured[0][0, 2:4], captured[0][0, 4:]
    torch.testing.assert_close(whole, torch.tensor([2.0, 1.0]))  # 8 over a quarter of the image
    torch.testing.assert_close(inside, torch.tensor([8.0, 1.0]), atol=0.01, rtol=0.0)  # 4 / (4 + 1e-3)
    torch.testing.assert_close(extent, torch.tensor([1.0, 0.25]))  # a lesion, a quarter of the image


def test_class_loss_does_not_teach_the_decoder_where_lesions_are() -> None:
    torch.manual_seed(0)
    model = UNetMultitask(1, 3).train()
    class_logits, _ = model(torch.rand(2, 1, SIZE, SIZE))
    nn.functional.cross_entropy(class_logits, torch.tensor([0, 2])).backward()
    top_up = [p for name, p in model.named_parameters() if name.startswith("model.2.")]
    assert top_up and all(p.grad is None for p in top_up)  # the lesion map is read, not trained, by the classifier
    assert model.model[0].conv.unit0.conv.weight.grad is not None  # the encoder is


def test_network_starts_from_a_lesion_unet(tmp_path: Path) -> None:
    lesion = build_network(ModelName.UNET, 1, 2)
    save_file(lesion.state_dict(), str(tmp_path / "best.safetensors"))
    model = build_network(ModelName.UNET_MULTITASK, 1, 3)
    report = load_initial_weights(model, tmp_path / "best.safetensors")
    assert set(report.loaded) == set(lesion.state_dict())  # encoder and decoder: the whole U-Net
    assert set(model.state_dict()) - set(report.loaded) == {"head.linear.weight", "head.linear.bias"}


def test_config_pairs_the_target_with_a_network_that_segments() -> None:
    assert multitask_config().model.name is ModelName.UNET_MULTITASK  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"model\.name smallcnn only classifies"):
        load_config(None, {"data.target": "class+mask"})
    with pytest.raises(ConfigError, match=r'set data\.target = "class\+mask"'):
        load_config(None, {"model.name": "unet-multitask", "data.image-size": SIZE})
    with pytest.raises(ConfigError, match=r"privacy\.dpsgd with model\.name unet-multitask"):
        multitask_config(**{"privacy.dpsgd": True, "privacy.dpsgd-noise-multiplier": 1.0})


def test_head_adds_the_lesion_loss_and_needs_masks() -> None:
    cfg = multitask_config()
    head = head_for(BUSI3, cfg)  # type: ignore[arg-type]
    assert isinstance(head, LesionGuidedHead) and head.selection_metric == "val-auc"
    images, labels, masks = lesion_batch()
    with_masks = ImageDataset(images, labels.numpy().reshape(-1, 1), Task.MULTICLASS, 3, masks)
    criterion = head.criterion(with_masks, cfg.train, torch.device("cpu"))  # type: ignore[attr-defined]
    assert isinstance(criterion, LesionGuidedLoss)
    class_logits, lesion_logits = torch.randn(4, 3), torch.randn(4, 2, SIZE, SIZE)
    lesion_loss = make_seg_loss(SegLoss.DICE_CE)(lesion_logits, masks.long())  # train.seg-loss's default
    expected = nn.CrossEntropyLoss(weight=criterion.classification.weight)(class_logits, labels) + lesion_loss
    torch.testing.assert_close(criterion((class_logits, lesion_logits), (labels, masks.long())), expected)
    with pytest.raises(TypeError, match="segments too"):
        criterion(class_logits, (labels, masks.long()))
    without = ImageDataset(images, labels.numpy().reshape(-1, 1), Task.MULTICLASS, 3)
    with pytest.raises(DataError, match="lesion mask per image"):
        head.criterion(without, cfg.train, torch.device("cpu"))  # type: ignore[attr-defined]


def test_training_fits_the_decoder_too(tmp_path: Path) -> None:
    cfg = multitask_config(**{"train.batch-size": 4})
    read = read_mask_folder(busi_subset(tmp_path / "busi"), image_size=SIZE, target=TargetKind.CLASS_AND_MASK)
    dataset = make_dataset(read.splits["train"], read.schema, SIZE)
    torch.manual_seed(0)
    model = build_network(ModelName.UNET_MULTITASK, 1, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = head_for(read.schema, cfg)  # type: ignore[arg-type]
    plan = LocalTraining(epochs=1, first_epoch=0, total_epochs=1, seed=3)
    result = train_epochs(model, dataset, cfg.train, plan, torch.device("cpu"), head=head, augment=True)  # type: ignore[attr-defined]
    assert np.isfinite(result.loss) and result.num_examples == len(dataset)
    after = model.state_dict()
    decoder = [k for k in after if k.startswith("model.2.")]  # the top level's up block: only the mask loss reaches it
    assert decoder and all(not torch.equal(after[k], before[k]) for k in decoder if after[k].is_floating_point())
    assert not torch.equal(after["head.linear.weight"], before["head.linear.weight"])


def test_a_hospital_folder_without_masks_is_refused_when_it_is_loaded(tmp_path: Path) -> None:
    """A class+mask run names the folder at enrolment, not at the first train message."""
    cfg = multitask_config()
    plain = write_dicom_folder(tmp_path / "plain", n=8)
    with pytest.raises(DataError, match=r"plain: the run learns classes with lesion masks"):
        load_site_folder(plain, cfg, BINARY, name="plain", cache_root=None)  # type: ignore[arg-type]
    busi = busi_subset(tmp_path / "busi")
    site = load_site_folder(busi, cfg, BUSI3, name="busi", cache_root=None)  # type: ignore[arg-type]
    assert site.train.masks is not None and len(site.train) > 0  # type: ignore[union-attr]


def test_a_simulation_on_data_without_masks_is_refused_when_it_is_set_up(tmp_path: Path) -> None:
    """Not a federation whose every hospital fails its first round."""
    write_npz(tmp_path / "pneumoniamnist.npz", sizes=(40, 10, 10))
    cfg = multitask_config(**{"data.dataset": "pneumoniamnist", "data.data-dir": str(tmp_path)})
    with pytest.raises(DataError, match=r"pneumoniamnist\.npz: the run learns classes with lesion masks"):
        resolve_run(cfg, Setting.SIMULATION)  # type: ignore[arg-type]
    busi_subset(tmp_path / "busi")
    busi = multitask_config(**{"data.dataset": "busi", "data.data-dir": str(tmp_path)})
    assert resolve_run(busi, Setting.SIMULATION).schema.classes == BUSI3.classes  # type: ignore[arg-type]
