"""Resolved inputs and produced outputs of a task (`/task/<key>/input_assets/`, `/output_assets/`)."""

from __future__ import annotations

from typing import Any

from backend_common.db.replica import (
    ComputeTask,
    ComputeTaskInput,
    ComputeTaskOutputAsset,
    DataManager,
    DataSample,
    FunctionInput,
    Model,
    Performance,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend_server import render
from backend_server.data import data_managers, data_samples


def input_assets(session: Session, task: ComputeTask, base_url: str) -> list[dict[str, Any]]:
    """Inputs whose asset is known, ordered by identifier then position (parents' outputs once produced)."""
    kinds: dict[str, str] = {
        identifier: kind
        for identifier, kind in session.execute(
            select(FunctionInput.identifier, FunctionInput.kind).where(
                FunctionInput.function_key == task.function_key
            )
        )
    }
    inputs = session.scalars(
        select(ComputeTaskInput)
        .where(ComputeTaskInput.task_key == task.key)
        .order_by(ComputeTaskInput.identifier, ComputeTaskInput.position)
    ).all()
    parent_refs = [(i.parent_task_key, i.parent_task_output_identifier) for i in inputs if i.parent_task_key]
    produced: dict[tuple[str, str], list[str]] = {}
    if parent_refs:
        for task_key, identifier, asset_key in session.execute(
            select(
                ComputeTaskOutputAsset.task_key,
                ComputeTaskOutputAsset.identifier,
                ComputeTaskOutputAsset.asset_key,
            )
            .where(ComputeTaskOutputAsset.task_key.in_({key for key, _ in parent_refs}))
            .order_by(ComputeTaskOutputAsset.id)
        ):
            produced.setdefault((task_key, identifier), []).append(asset_key)
    keys_by_kind: dict[str, list[str]] = {
        "ASSET_DATA_MANAGER": [],
        "ASSET_DATA_SAMPLE": [],
        "ASSET_MODEL": [],
    }
    resolved: list[tuple[str, str, str]] = []
    for task_input in inputs:
        kind = kinds.get(task_input.identifier, "")
        if task_input.asset_key:
            keys = [task_input.asset_key]
        else:
            keys = produced.get(
                (task_input.parent_task_key or "", task_input.parent_task_output_identifier or ""), []
            )
        for key in keys:
            resolved.append((task_input.identifier, kind, key))
            keys_by_kind.setdefault(kind, []).append(key)
    documents: dict[str, dict[str, Any]] = {}
    if keys_by_kind["ASSET_DATA_MANAGER"]:
        rows = session.scalars(
            select(DataManager).where(DataManager.key.in_(keys_by_kind["ASSET_DATA_MANAGER"]))
        ).all()
        linked = data_managers.sample_keys(session, [row.key for row in rows])
        documents.update(
            {row.key: render.data_manager(row, linked.get(row.key, []), base_url) for row in rows}
        )
    if keys_by_kind["ASSET_DATA_SAMPLE"]:
        samples = session.scalars(
            select(DataSample).where(DataSample.key.in_(keys_by_kind["ASSET_DATA_SAMPLE"]))
        ).all()
        sample_links = data_samples.data_manager_keys(session, [row.key for row in samples])
        documents.update({row.key: render.data_sample(row, sample_links.get(row.key, [])) for row in samples})
    if keys_by_kind["ASSET_MODEL"]:
        models = session.scalars(select(Model).where(Model.key.in_(keys_by_kind["ASSET_MODEL"]))).all()
        documents.update({row.key: render.model(row, base_url) for row in models})
    return [
        {"identifier": identifier, "kind": kind, "asset": documents[key]}
        for identifier, kind, key in resolved
        if key in documents
    ]


def output_assets(session: Session, task: ComputeTask, base_url: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ComputeTaskOutputAsset)
        .where(ComputeTaskOutputAsset.task_key == task.key)
        .order_by(ComputeTaskOutputAsset.identifier, ComputeTaskOutputAsset.id)
    ).all()
    model_keys = [row.asset_key for row in rows if row.asset_kind == "ASSET_MODEL"]
    models = {
        row.key: render.model(row, base_url)
        for row in (
            session.scalars(select(Model).where(Model.key.in_(model_keys))).all() if model_keys else []
        )
    }
    performances = {
        row.identifier: render.performance(row)
        for row in session.scalars(select(Performance).where(Performance.compute_task_key == task.key)).all()
    }
    items: list[dict[str, Any]] = []
    for row in rows:
        asset = (
            models.get(row.asset_key) if row.asset_kind == "ASSET_MODEL" else performances.get(row.identifier)
        )
        if asset is not None:
            items.append({"identifier": row.identifier, "kind": row.asset_kind, "asset": asset})
    return items
