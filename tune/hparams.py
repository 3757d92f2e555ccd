"""The TensorBoard HParams definition of a whole search: one for the experiment, not one per run.

TensorBoard keeps one HParams *experiment* per logdir (the first run that has one: its
``_find_experiment_tag``); when every trial wrote its own, the columns were those of whichever
trial came first, so a baseline's trial could hide PU-MLC's ``alpha`` and ``gamma``. The search
writes one definition at the root of ``tensorboard/`` listing what every trial may carry (its
study, task, method, prob, repeat and seeds, and the union of all studies' searched fields with
their ranges) and, as metric columns, only the scalars the studies' protocols write every epoch
(``pu_mlc.choices.HPARAM_METRICS``: no empty ``test/mAP`` column under the honest protocol).
The trials write only their own session values (``pu_mlc.engine.tensorboard.RunWriter``).
"""

from __future__ import annotations

from typing import Any

from pu_mlc.choices import HPARAM_METRICS

from .space import SearchSpec
from .store import ExperimentStore

#: What identifies a trial in the HParams tab, before the searched fields.
IDENTITY = ("study", "task", "method", "prob")
REPEAT_FIELDS = ("repeat", "seed", "mask_seed")


def experiment_columns(spec: SearchSpec) -> tuple[dict[str, Any], list[str]]:
    """``({hparam name: domain}, [metric tags])`` of the search: a domain is ``("interval",
    low, high)``, ``("discrete", values)`` or ``("string", values)``."""
    hparams: dict[str, Any] = {
        "study": ("string", [s.name for s in spec.studies]),
        "task": ("string", sorted({s.task for s in spec.studies})),
        "method": ("string", sorted({s.method for s in spec.studies})),
        "prob": ("discrete", sorted({float(s.prob) for s in spec.studies})),
    }
    for study in spec.studies:
        for name, dist in sorted(study.search.items()):
            if dist.type == "choice":
                values = list(dist.values)
                if all(isinstance(v, str) for v in values):
                    domain = ("string", values)
                else:
                    domain = ("discrete", [float(v) for v in values])
            else:
                domain = ("interval", float(dist.low), float(dist.high))
            hparams[name] = _union(hparams.get(name), domain)
    if spec.repeats:
        hparams["repeat"] = ("discrete", [float(r) for r in range(1, spec.repeats + 1)])
        hparams["seed"] = ("number",)
        hparams["mask_seed"] = ("number",)
    protocols = sorted({s.base.protocol for s in spec.studies})
    metrics = list(dict.fromkeys(m for p in protocols for m in HPARAM_METRICS[p]))
    return hparams, metrics


def _union(old, new):
    if old is None or old == new:
        return new
    if old[0] == new[0] == "interval":
        return ("interval", min(old[1], new[1]), max(old[2], new[2]))
    if old[0] == new[0] and old[0] in ("discrete", "string"):
        return (old[0], sorted(set(old[1]) | set(new[1]), key=str))
    return ("number",) if "string" not in (old[0], new[0]) else ("string", [])


def write_hparams_experiment(store: ExperimentStore, spec: SearchSpec) -> None:
    """Write the experiment's HParams definition into ``tensorboard/`` (once: a resumed search
    finds it there)."""
    import tempfile
    import time
    from pathlib import Path

    from google.protobuf import struct_pb2
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    if any(name.startswith("events.out.tfevents.") and not is_dir
           for name, is_dir in store.storage.list_dir(store.tensorboard_dir)):
        return
    hparams, metrics = experiment_columns(spec)
    infos = []
    for name, domain in hparams.items():
        kind = domain[0]
        info = api_pb2.HParamInfo(name=name)
        if kind == "string":
            info.type = api_pb2.DATA_TYPE_STRING
            if domain[1]:
                info.domain_discrete.CopyFrom(struct_pb2.ListValue(
                    values=[struct_pb2.Value(string_value=str(v)) for v in domain[1]]))
        else:
            # numbers and bools: the runs' session values are numbers (torch writes a bool so)
            info.type = api_pb2.DATA_TYPE_FLOAT64
            if kind == "interval":
                info.domain_interval.min_value, info.domain_interval.max_value = domain[1:]
            elif kind == "discrete":
                info.domain_discrete.CopyFrom(struct_pb2.ListValue(
                    values=[struct_pb2.Value(number_value=float(v)) for v in domain[1]]))
        infos.append(info)
    experiment = api_pb2.Experiment(
        name=spec.name, hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics])
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment,
                                                version=metadata.PLUGIN_DATA_VERSION)
    summary = Summary(value=[Summary.Value(
        tag=metadata.EXPERIMENT_TAG,
        metadata=SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())))])
    with tempfile.TemporaryDirectory(prefix="pumlc-hparams-") as local:
        writer = EventFileWriter(local)
        try:
            writer.add_event(Event(wall_time=time.time(), summary=summary))
            writer.flush()
        finally:
            writer.close()
        store.upload(Path(local), store.tensorboard_dir)     # the experiment's root run
