"""Tests of ``epsseg_monai.engines.prepare_batch`` alone and inside ``monai.engines`` workflows."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer

from epsseg_monai.engines import PrepareEpsSegBatch, PrepareSparseValidationBatch
from epsseg_monai.handlers import LossTermsHandler, SparseDiceHandler
from epsseg_monai.inferers import PatchCenterInferer
from epsseg_monai.losses import EpsSegTrainerLoss
from epsseg_monai.metrics import SparseDiceMetric
from epsseg_monai.networks import EpsSegHVAE
from epsseg_monai.utils import center_region_mask


def train_batch(batch: int = 4, patch: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    target = torch.randn((batch, 1, patch, patch), generator=g)
    mask = center_region_mask((patch, patch), 3)[None, None].expand(batch, 1, patch, patch).clone()
    return {
        "image": torch.where(mask, torch.zeros_like(target), target),
        "target": target,
        "class": torch.tensor([[1], [2], [0], [3]][:batch]),
        "mask": mask,
    }


def test_eps_seg_batch() -> None:
    data = train_batch()
    inputs, targets = PrepareEpsSegBatch()(data, device="cpu")
    assert torch.equal(inputs, data["image"])
    assert set(targets) == {"target", "label", "mask"}
    assert torch.equal(targets["target"], data["target"])
    assert torch.equal(targets["mask"], data["mask"])
    assert targets["label"].dtype == torch.long and targets["label"].tolist() == [1, 2, 0, 3]


def test_eps_seg_batch_custom_keys_and_no_mask() -> None:
    data = train_batch()
    renamed = {"masked": data["image"], "clean": data["target"], "cls": data["class"].float()}
    inputs, targets = PrepareEpsSegBatch("masked", "clean", "cls", mask_key=None)(renamed)
    assert torch.equal(inputs, data["image"])
    assert set(targets) == {"target", "label"}
    assert targets["label"].dtype == torch.long and targets["label"].tolist() == [1, 2, 0, 3]


@pytest.mark.parametrize("key", ["image", "target", "class", "mask"])
def test_eps_seg_batch_missing_key(key: str) -> None:
    data = train_batch()
    del data[key]
    with pytest.raises(KeyError, match=f"batch has no '?{key}'?; its keys are"):
        PrepareEpsSegBatch()(data)


def test_metatensor_batches_reach_the_network_as_plain_tensors() -> None:
    """The transforms' ``MetaTensor`` metadata would be carried through every operation of the network."""
    from monai.data import MetaTensor

    data = {k: MetaTensor(v, meta={"filename_or_obj": "a.tif"}) for k, v in train_batch().items()}
    inputs, targets, _, extra = PrepareEpsSegBatch(unmasked_fine=True)(data, device="cpu")
    for x in (inputs, *targets.values(), *extra.values()):
        assert type(x) is torch.Tensor
    assert torch.equal(inputs, data["image"].as_tensor()) and torch.equal(extra["unmasked"], data["target"].as_tensor())
    image, label, _, kwargs = PrepareSparseValidationBatch()(
        {"image": MetaTensor(torch.randn(1, 1, 4, 4)), "label": MetaTensor(torch.ones(1, 1, 4, 4))}
    )
    assert type(image) is torch.Tensor and type(label) is torch.Tensor and type(kwargs["mask"]) is torch.Tensor


def test_sparse_validation_batch() -> None:
    image = torch.randn(2, 1, 5, 6)
    label = torch.zeros(2, 1, 5, 6)
    label[0, 0, 1, 2] = 2
    label[1, 0, 4, 5] = 1
    inputs, labels, args, kwargs = PrepareSparseValidationBatch()({"image": image, "label": label}, device="cpu")
    assert torch.equal(inputs, image) and torch.equal(labels, label)
    assert args == ()
    assert set(kwargs) == {"mask"} and kwargs["mask"].dtype == torch.bool
    assert torch.equal(kwargs["mask"], label > 0)
    with pytest.raises(KeyError, match="batch has no '?label'?; its keys are \\['image'\\]"):
        PrepareSparseValidationBatch()({"image": image})
    out = PrepareSparseValidationBatch("img", "seg")({"img": image, "seg": label})
    assert torch.equal(out[0], image) and torch.equal(out[3]["mask"], label > 0)


def tiny_network() -> EpsSegHVAE:
    return EpsSegHVAE(
        2, 1, 3, num_levels=2, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16, head_window=4
    )


def test_trainer_step_with_eps_seg_pieces() -> None:
    """``SupervisedTrainer`` + ``PrepareEpsSegBatch`` + ``EpsSegTrainerLoss`` + ``LossTermsHandler`` run together."""
    net = tiny_network()
    loss = EpsSegTrainerLoss(mask_size=3)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[train_batch(), train_batch()],
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=loss,
        prepare_batch=PrepareEpsSegBatch(),
        train_handlers=[LossTermsHandler(loss)],
        decollate=False,
    )
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    metrics = trainer.state.metrics
    assert set(metrics) == {"train_loss", "train_inpainting", "train_kl", "train_contrastive", "train_ce"}
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics["train_ce"] > 0
    assert any(not torch.equal(p, b) for p, b in zip(net.parameters(), before))


def test_evaluator_predicts_only_labelled_pixels() -> None:
    torch.manual_seed(0)
    net = tiny_network()
    image = torch.randn(2, 1, 9, 10)
    label = torch.zeros(2, 1, 9, 10)
    for b, (y, x, c) in enumerate([(0, 0, 1), (8, 9, 2), (4, 5, 3)] * 2):
        label[b % 2, 0, (y + b) % 9, (x + b) % 10] = c
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=[{"image": image, "label": label}],
        network=net,
        inferer=PatchCenterInferer(16, batch_size=4),
        prepare_batch=PrepareSparseValidationBatch(),
        key_val_metric={"val_dice": SparseDiceHandler(3)},
        decollate=False,
    )
    evaluator.run()
    pred = evaluator.state.output["pred"]
    assert pred.shape == (2, 3, 9, 10)
    assert torch.equal(pred.sum(1) > 0, label[:, 0] > 0)
    metric = SparseDiceMetric(3)
    metric(pred, label)
    assert evaluator.state.metrics["val_dice"] == pytest.approx(metric.aggregate().item(), nan_ok=True)
    assert {"val_dice_class1", "val_dice_class2", "val_dice_class3"} <= set(evaluator.state.metrics)


def test_eps_seg_batch_passes_crops_and_unmasked_patches_to_the_network() -> None:
    """Crops for the dense cross-entropy and the unmasked patches reach the network as keyword arguments."""
    data = train_batch()
    data["dense_image"] = torch.randn(4, 1, 24, 24)
    data["dense_label"] = torch.randint(0, 4, (4, 1, 24, 24)).float()
    inputs, targets, args, kwargs = PrepareEpsSegBatch(unmasked_fine=True)(data, device="cpu")
    assert torch.equal(inputs, data["image"]) and args == ()
    assert set(kwargs) == {"dense_inputs", "dense_labels", "unmasked"}
    assert torch.equal(kwargs["dense_inputs"], data["dense_image"])
    assert kwargs["dense_labels"].dtype == torch.long
    assert torch.equal(kwargs["unmasked"], data["target"])
    _, _, _, first = PrepareEpsSegBatch(dense_batch_size=2)(data, device="cpu")  # only the first crops
    assert torch.equal(first["dense_inputs"], data["dense_image"][:2]) and first["dense_labels"].shape[0] == 2
    with pytest.raises(ValueError, match="dense_batch_size"):
        PrepareEpsSegBatch(dense_batch_size=0)
    del data["dense_label"]
    with pytest.raises(KeyError, match="dense_label"):
        PrepareEpsSegBatch()(data)


def test_trainer_runs_the_dense_cross_entropy_of_eps_seg_plus() -> None:
    """A ``SupervisedTrainer`` step with crops: the network's dense pass and the dense term of the loss run."""
    net = EpsSegHVAE(2, 1, 3, num_filters=8, num_blocks=1, latent_channels=4, patch_size=16, head_window=4,
                     num_levels=2, head_fine_levels=(0, 1))  # fmt: skip
    batch = train_batch()
    crops = torch.randn(4, 1, 24, 24)
    labels = torch.zeros(4, 1, 24, 24)
    labels[:, 0, 12, 12] = torch.tensor([1.0, 2.0, 3.0, 1.0])
    labels[0, 0, 10, 15] = 2
    batch.update({"dense_image": crops, "dense_label": labels})
    loss = EpsSegTrainerLoss(dense_ce_weight=1.0, mask_size=3)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch],
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=loss,
        prepare_batch=PrepareEpsSegBatch(unmasked_fine=True),
        decollate=False,
    )
    trainer.run()
    assert loss.terms["dense_pixels"].item() == 5  # every labelled crop pixel inside the valid region
    assert torch.isfinite(loss.terms["dense_ce"])
