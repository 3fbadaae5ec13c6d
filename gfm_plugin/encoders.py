"""The dock's encoder choice: installed weights by what they are, then random-init shapes.

The pretrained encoder is the point of GFM, so the best installed one is the default; with
none on a CPU-only backend the tiny shape is (a random Swin-B is slow there and needs many
labels). Each choice is (label, data): data ("weights", NAME) or ("config", base|tiny).
"""

from __future__ import annotations

RANK = {"student": 0, "teacher": 1, "run": 2, "encoder": 3}
RANDOM = [("Swin-B, random init (slow on a CPU, needs many labels)", "config:base"),
          ("tiny, random init", "config:tiny")]


def label(record: dict) -> str:
    role = record.get("role")
    if role == "student":
        return f"GFM {record.get('architecture', 'Swin')}, pretrained ({record['name']})"
    if role == "teacher":
        return f"{record.get('architecture', 'Swin')} ImageNet-22k ({record['name']})"
    if role == "run":
        return f"your pretraining run {record['name']}"
    return f"{record['name']}: {record.get('what', 'encoder')}"


def choices(installed: list[dict], cpu_only: bool) -> tuple[list[tuple[str, str]], int]:
    """The combo's items and the index of the default."""
    ranked = sorted(installed, key=lambda r: (RANK.get(r.get("role", ""), 9), r.get("name", "")))
    items = [(label(r), f"weights:{r['name']}") for r in ranked] + RANDOM
    default = 0 if ranked else (len(items) - 1 if cpu_only else 0)
    return items, default
