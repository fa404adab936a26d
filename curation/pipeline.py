"""Named pipelines from YAML: an ordered list of stages with validated parameters.

Every error names the file and line it comes from, and is raised before any work starts.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import stages as stages_package
from curation.stage import Params, Stage, matches_any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PIPELINES = REPO_ROOT / "pipelines.yaml"
_LEVEL_ORDER = {"source": 0, "clip": 1, "sink": 2}


class PipelineError(ValueError):
    """A pipeline definition that cannot run; the message names where it went wrong."""


class Pool(BaseModel):
    """How many workers run a stage, and what each reserves; `pool:` in a stage's entry. Unset
    fields follow the stage's declared resources, and `--workers` caps every pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_workers: int = Field(1, ge=1, description="workers kept running (actor pools)")
    max_workers: int | None = Field(None, ge=1, description="most workers at once (null: as many as the cluster's resources allow)")
    gpus: float | None = Field(None, ge=0, description="GPU share each worker reserves, instead of the stage's own")
    cpus: float | None = Field(None, gt=0, description="CPUs each worker reserves, instead of the stage's own")

    @model_validator(mode="after")
    def _bounds(self) -> Pool:
        if self.max_workers is not None and self.max_workers < self.min_workers:
            raise ValueError("max_workers must be >= min_workers")
        return self


@dataclass
class StageConfig:
    name: str
    cls: type[Stage]
    params: Params
    where: str  # "file:line" of the stage's entry
    pool: Pool = field(default_factory=Pool)

    def build(self) -> Stage:
        return self.cls(self.params)

    def lineage(self) -> dict[str, Any]:
        """What decides the stage's output: the pool (how it is run) is left out on purpose."""
        return {"name": self.name, "version": self.cls.version, "params": self.params.model_dump(mode="json")}


@dataclass
class Pipeline:
    name: str
    stages: list[StageConfig]

    def lineage(self) -> dict[str, Any]:
        return {"pipeline": self.name, "stages": [s.lineage() for s in self.stages]}

    def config_hash(self) -> str:
        text = json.dumps(self.lineage(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def sink(self) -> StageConfig:
        return self.stages[-1]


def available_stages() -> list[str]:
    """Stage names: one module per stage in stages/, named after it."""
    return sorted(m.name for m in pkgutil.iter_modules(stages_package.__path__)
                  if not m.ispkg and not m.name.startswith("_"))


def stage_class(name: str) -> type[Stage]:
    module = importlib.import_module(f"stages.{name}")
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Stage) and getattr(obj, "name", None) == name]
    if len(found) != 1:
        raise PipelineError(f"stages/{name}.py must define exactly one Stage with name = {name!r}")
    return found[0]


def load_pipeline(name: str, path: Path | str = DEFAULT_PIPELINES,
                  overrides: list[str] | None = None) -> Pipeline:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: no such pipelines file")
    root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    where = _Where(path)
    if not isinstance(root, yaml.MappingNode):
        raise PipelineError(f"{where(root)}: expected a mapping of pipeline names")
    pipelines = {k.value: (k, v) for k, v in root.value}
    if name not in pipelines:
        hint = _did_you_mean(name, pipelines)
        raise PipelineError(f"{path}: no pipeline named {name!r}{hint}; defined: {', '.join(pipelines)}")
    _, body = pipelines[name]
    entries = _stage_entries(body, where)
    _apply_overrides(entries, overrides or [])
    configs = [_stage_config(entry, where, path.parent) for entry in entries]
    _check_order(configs)
    return Pipeline(name, configs)


def _stage_entries(body: yaml.Node, where: _Where) -> list[dict]:
    stages_node = body
    if isinstance(body, yaml.MappingNode):
        found = {k.value: v for k, v in body.value}
        unknown = set(found) - {"stages", "description"}
        if unknown:
            raise PipelineError(f"{where(body)}: unknown pipeline key(s) {sorted(unknown)}; expected 'stages'")
        if "stages" not in found:
            raise PipelineError(f"{where(body)}: pipeline has no 'stages' list")
        stages_node = found["stages"]
    if not isinstance(stages_node, yaml.SequenceNode) or not stages_node.value:
        raise PipelineError(f"{where(stages_node)}: 'stages' must be a non-empty list")
    entries = []
    for node in stages_node.value:
        if isinstance(node, yaml.ScalarNode):
            entries.append({"name": node.value, "node": node, "params": {}, "keys": {}})
            continue
        if not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
            raise PipelineError(f"{where(node)}: a stage entry is `- name` or `- name: {{param: value}}`")
        key, value = node.value[0]
        params, keys = {}, {}
        if isinstance(value, yaml.MappingNode):
            for pkey, pvalue in value.value:
                params[pkey.value] = yaml.safe_load(yaml.serialize(pvalue))
                keys[pkey.value] = pkey
        elif not (isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null")):
            raise PipelineError(f"{where(value)}: parameters of {key.value!r} must be a mapping")
        entries.append({"name": key.value, "node": key, "params": params, "keys": keys})
    return entries


def _apply_overrides(entries: list[dict], overrides: list[str]) -> None:
    by_name = {e["name"]: e for e in entries}
    for text in overrides:
        target, sep, value = text.partition("=")
        stage, dot, param = target.partition(".")
        if not sep or not dot:
            raise PipelineError(f"--set {text!r}: expected STAGE.PARAM=VALUE")
        if stage not in by_name:
            raise PipelineError(f"--set {text!r}: stage {stage!r} is not in this pipeline"
                                f"{_did_you_mean(stage, by_name)}")
        by_name[stage]["params"][param] = yaml.safe_load(value)
        by_name[stage]["keys"][param] = f"--set {text}"


def _stage_config(entry: dict, where: _Where, base: Path) -> StageConfig:
    name, at = entry["name"], where(entry["node"])
    known = available_stages()
    if name not in known:
        raise PipelineError(f"{at}: unknown stage {name!r}{_did_you_mean(name, known)}; "
                            f"stages: {', '.join(known)}")
    cls = stage_class(name)
    _resolve_weight_paths(entry, cls.Params, base)
    pool_settings = entry["params"].pop("pool", None) or {}
    try:
        pool = Pool.model_validate(pool_settings)
    except ValidationError as err:
        key = entry["keys"].get("pool")
        place = key if isinstance(key, str) else (where(key) if key is not None else at)
        problems = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'pool'}: {p['msg']}" for p in err.errors())
        raise PipelineError(f"{place}: {name}.pool: {problems} (pool takes {', '.join(Pool.model_fields)})") from None
    try:
        params = cls.Params(**entry["params"])
    except ValidationError as err:
        raise PipelineError(_explain(err, name, cls.Params, entry["keys"], at, where)) from None
    _check_weights(name, params, entry["keys"], at, where)
    return StageConfig(name, cls, params, at, pool)


def _resolve_weight_paths(entry: dict, params_cls: type[Params], base: Path) -> None:
    """Relative weight paths in a pipelines file are relative to that file, wherever the run starts
    (a `--set` value stays relative to the working directory, as a shell user expects; a value that
    names nothing there may be a hub id and stays as it is)."""
    for name in params_cls.weight_fields():
        value = entry["params"].get(name)
        from_file = not isinstance(entry["keys"].get(name), str)
        if from_file and isinstance(value, str) and value and (base / value).exists():
            entry["params"][name] = str((base / value).resolve())


def _check_weights(stage: str, params: Params, keys: dict, at: str, where: _Where) -> None:
    """A weight path that is set must exist: a typo stops the run here, not on a worker."""
    for name, marker in type(params).weight_fields().items():
        value = getattr(params, name)
        problem = marker.problem(value, params) if value else None
        if problem:
            key = keys.get(name)
            place = key if isinstance(key, str) else (where(key) if key is not None else at)
            relative = "" if isinstance(key, str) or Path(value).is_absolute() else \
                f" (relative paths in a pipelines file are read from its folder, {where.path.parent})"
            raise PipelineError(f"{place}: {stage}.{name}: {problem}{relative}")


def _explain(err: ValidationError, stage: str, params_cls: type[Params], keys: dict, at: str,
             where: _Where) -> str:
    lines = []
    for problem in err.errors():
        param = str(problem["loc"][0]) if problem["loc"] else ""
        key = keys.get(param)
        place = key if isinstance(key, str) else (where(key) if key is not None else at)
        if problem["type"] == "extra_forbidden":
            lines.append(f"{place}: {stage}: unknown parameter {param!r}"
                         f"{_did_you_mean(param, params_cls.model_fields)}")
        elif problem["type"] == "missing":
            lines.append(f"{place}: {stage}: missing required parameter {param!r}")
        else:
            label = f"{stage}.{param}" if param else stage
            lines.append(f"{place}: {label}: {problem['msg']} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _check_order(configs: list[StageConfig]) -> None:
    seen: set[str] = set()
    added: set[str] = set()
    for i, config in enumerate(configs):
        if config.name in seen:
            raise PipelineError(f"{config.where}: stage {config.name!r} appears twice")
        for needed in getattr(config.cls, "requires", ()):
            if needed not in seen:
                raise PipelineError(f"{config.where}: stage {config.name!r} needs {needed!r} before it")
        for member in config.cls.reads_members:
            if not matches_any(member, added):
                makers = [n for n in available_stages() if member in stage_class(n).adds_members]
                raise PipelineError(f"{config.where}: stage {config.name!r} reads the clip's {member!r}, which "
                                    f"{' or '.join(makers) or 'no stage'} adds: put that before it")
        added.update(config.cls.adds_members)
        if i and _LEVEL_ORDER[config.cls.level] < _LEVEL_ORDER[configs[i - 1].cls.level]:
            raise PipelineError(f"{config.where}: {config.cls.level}-level stage {config.name!r} cannot "
                                f"follow {configs[i - 1].cls.level}-level stage {configs[i - 1].name!r}")
        seen.add(config.name)
    if configs[-1].cls.level != "sink" or sum(c.cls.level == "sink" for c in configs) != 1:
        raise PipelineError(f"{configs[-1].where}: a pipeline ends with exactly one sink stage (write)")


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Where:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"
