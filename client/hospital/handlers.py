"""What a hospital does with each message of a run: the handlers behind the ClientApp.

* ``query``: enrolment — the hospital's name, fedward version, device and image counts;
* ``train``: start from the global model, train ``local-epochs`` on local images, reply
  with the new weights and counts/losses; with ``evaluate-first`` in its config, score the
  received model on the validation split first and reply with those metrics too (the
  coordinator's round loop then needs no ``evaluate`` message for the previous round);
* ``evaluate``: score the global model on the local validation split.

Replies carry weights and numbers only. Failures reply with an error whose text is
fedward's own message (names a setting or a file, never patient data); unexpected
exceptions are reported by type only, with details in the hospital's own log.

They run where the hospital's model and images live: in the hospital's warm worker
(:mod:`fedward.client.hospital.worker`) in deployment, or in the ClientApp's own process in
simulation (Ray's actors are long-lived); :mod:`fedward.client.hospital.clientapp` decides.
:func:`handle` is the one entry point: it applies the run's client-side clipping mod to
``train`` exactly as a ClientApp mod would.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from fedward.client.hospital.clipping import client_clipping_mod
from fedward.client.hospital.failure import HospitalError
from fedward.client.hospital.run_cache import HospitalRun, hospital_run
from fedward.common.errors import FedwardError
from fedward.common.flower.packing import PackingError, has_packed, pack_content, unpack_content
from fedward.common.logs import configure_logging
from fedward.common.ml.accounting import DpSgd
from fedward.common.ml.networks import network_for
from fedward.common.ml.runtime import derive_seed, device_label
from fedward.common.ml.tasks import head_for
from fedward.common.ml.training import LocalTraining, train_epochs
from fedward.common.version import compatible, fedward_version
from fedward.common.wire import (
    ARRAYS,
    CONFIG,
    DPSGD_EPSILON,
    EVAL_SECONDS,
    EVALUATE_FIRST,
    METRICS,
    NUM_EXAMPLES,
    PROXIMAL_MU,
    SERVER_ROUND,
    SITE,
    SITE_DEVICE,
    SITE_NAME,
    SITE_VERSION,
    TRAIN_EXAMPLES,
    TRAIN_LOSS,
    TRAIN_SECONDS,
    VAL_EXAMPLES,
    VALIDATION,
    load_arrays,
    model_to_arrays,
)

log = logging.getLogger(__name__)

Handler = Callable[[Message, Context], Message]


def _safe(handler: Handler) -> Handler:
    """Turn any failure into an error reply whose text carries no local details."""

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        configure_logging()
        try:
            return handler(msg, context)
        except FedwardError as err:
            log.error("%s failed: %s", handler.__name__, err)
            raise HospitalError(str(err)) from None
        except Exception as err:
            log.exception("%s failed unexpectedly", handler.__name__)
            raise HospitalError(
                f"{handler.__name__} failed with {type(err).__name__}; details are in the hospital's agent log"
            ) from None

    return wrapper


def _site_record(run: HospitalRun) -> ConfigRecord:
    """Who answers: name, fedward version, and the device with its training precision, e.g. ``cpu (bfloat16)``."""
    device = device_label(run.device, amp=run.spec.config.train.amp, private=run.spec.config.privacy.dpsgd)
    return ConfigRecord({SITE_NAME: run.site.name, SITE_VERSION: fedward_version(), SITE_DEVICE: device})


@_safe
def query(msg: Message, context: Context) -> Message:
    """Enrolment: who this hospital is and how much data it holds.

    Counts only: training and validation images, and for image folders the files used and
    skipped (by reason). Never file names, paths or header values.
    """
    run = hospital_run(context)
    site = run.site
    theirs = str(msg.content[CONFIG].get(SITE_VERSION, "")) if CONFIG in msg.content else ""
    if theirs and not compatible(fedward_version(), theirs):
        log.warning(
            "the coordinator runs fedward %s and this hospital %s: it will skip this hospital "
            "until both run the same major.minor version",
            theirs,
            fedward_version(),
        )
    content = RecordDict(
        {
            SITE: _site_record(run),
            METRICS: MetricRecord({TRAIN_EXAMPLES: len(site.train), VAL_EXAMPLES: len(site.val), **site.inventory}),
        }
    )
    return Message(content=content, reply_to=msg)


@_safe
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data; reply with weights and counts."""
    run = hospital_run(context)
    cfg, site, device = run.spec.config, run.site, run.device
    config = msg.content[CONFIG]
    server_round = int(config.get(SERVER_ROUND, 1))  # type: ignore[arg-type]
    model = network_for(cfg, run.spec.schema)
    load_arrays(model, msg.content.array_records[ARRAYS])
    validation = _validate(run, model) if bool(config.get(EVALUATE_FIRST, False)) else None
    epochs = cfg.train.local_epochs
    plan = LocalTraining(
        epochs=epochs,
        first_epoch=(server_round - 1) * epochs,
        total_epochs=cfg.federation.rounds * epochs,
        proximal_mu=float(config.get(PROXIMAL_MU, 0.0)),  # type: ignore[arg-type]
        seed=derive_seed(cfg.run.seed, "train", site.name, server_round),
    )
    dpsgd = DpSgd.for_hospital(cfg, len(site.train))
    head = head_for(run.spec.schema, cfg)
    result = train_epochs(model, site.train, cfg.train, plan, device, head=head, augment=cfg.data.augment, dpsgd=dpsgd)
    privacy = {DPSGD_EPSILON: dpsgd.epsilon(server_round)} if dpsgd is not None else {}
    log.info(
        "round %d: trained on %d images in %.1f s (loss %.4f)",
        server_round,
        result.num_examples,
        result.seconds,
        result.loss,
    )
    content = RecordDict(
        {
            ARRAYS: model_to_arrays(model),
            METRICS: MetricRecord(
                {
                    NUM_EXAMPLES: result.num_examples,
                    TRAIN_LOSS: result.loss,
                    TRAIN_SECONDS: result.seconds,
                    **privacy,
                }
            ),
            SITE: _site_record(run),
        }
    )
    if validation is not None:
        content[VALIDATION] = validation
    return Message(content=content, reply_to=msg)


@_safe
def evaluate_global(msg: Message, context: Context) -> Message:
    """Score the received global model on the local validation split."""
    run = hospital_run(context)
    model = network_for(run.spec.config, run.spec.schema)
    load_arrays(model, msg.content.array_records[ARRAYS])
    content = RecordDict({METRICS: _validate(run, model), SITE: _site_record(run)})
    return Message(content=content, reply_to=msg)


def _validate(run: HospitalRun, model: nn.Module) -> MetricRecord:
    """``model``'s metrics on the local validation split (``num-examples`` only when it is empty).

    The same numbers whether asked by an ``evaluate`` message or, with ``evaluate-first``,
    by a ``train`` message before it trains (the model is not changed). Beside the metrics
    go the split's statistics for the federation's operating point (list-valued sums over
    fixed bins, never a per-image score; :mod:`fedward.common.ml.valstats`).
    """
    site = run.site
    metrics: dict[str, float | int | list[float]] = {NUM_EXAMPLES: len(site.val)}
    if len(site.val) > 0:
        started = time.perf_counter()
        result = head_for(run.spec.schema, run.spec.config).evaluate(model, site.val, run.device)
        metrics.update(result.metrics.wire("val"))
        metrics.update(result.statistics)
        metrics[EVAL_SECONDS] = time.perf_counter() - started
    return MetricRecord(metrics)  # type: ignore[arg-type]


HANDLERS: dict[str, Handler] = {
    "query": query,
    "train": lambda msg, context: client_clipping_mod(msg, context, train),
    "evaluate": evaluate_global,
}
"""Message type (``query``, ``train``, ``evaluate``) to its handler, mods applied."""


def handle(kind: str, msg: Message, context: Context) -> Message:
    """Serve one message of type ``kind`` for ``context``'s run and node.

    A model the coordinator packed into one array (:mod:`fedward.common.flower.packing`)
    is unpacked first, and the reply's model packed the same way.

    Raises:
        HospitalError: the request failed; its text is safe to send to the coordinator.
    """
    handler = HANDLERS.get(kind)
    if handler is None:
        raise HospitalError(f"this hospital does not serve {kind!r} messages")
    packed = msg.has_content() and has_packed(msg.content)
    if packed:
        try:
            msg.content = unpack_content(msg.content)
        except PackingError as err:
            log.error("%s message: %s", kind, err)
            raise HospitalError(f"the {kind} message could not be read: {err}") from None
    reply = handler(msg, context)
    if packed and reply.has_content():
        reply.content = pack_content(reply.content)
    return reply
