"""Lookups into a rendered Argo object (a parsed YAML dict), shared by the workflow tests."""

from __future__ import annotations


def templates(obj: dict) -> dict[str, dict]:
    return {t["name"]: t for t in obj["spec"]["templates"]}


def tasks(obj: dict) -> dict[str, dict]:
    return {t["name"]: t for t in templates(obj)[obj["spec"]["entrypoint"]]["dag"]["tasks"]}


def artifacts(section: dict | None) -> dict[str, dict]:
    return {a["name"]: a for a in (section or {}).get("artifacts", [])}
