"""docs/model_card.md is the rendering of the shipped card and profiles, not a hand copy."""

from __future__ import annotations

from pathlib import Path

from edgelam.envs.lam import card, family_card

ROOT = Path(__file__).resolve().parents[2]


def test_committed_model_card_is_rendered_from_the_shipped_files():
    page = card.render()
    assert (ROOT / "docs" / "model_card.md").read_text() == page, (
        "docs/model_card.md is stale: run `python -m edgelam.envs.lam.card`"
    )
    shipped = family_card()
    for name, m in shipped["models"].items():
        row = next(ln for ln in page.splitlines() if ln.startswith(f"| `{name}` | {m['layers']} x"))
        assert f"| {m['heldout_top1']:.3f} |" in row and f"| {m['heldout_loss_nats']:.3f} |" in row
    assert all(f"build_family {cmd}" in page for cmd in shipped["rebuild"])


def test_the_card_page_follows_the_card():
    """A changed number in family.json changes the page (the page is not a fixed text)."""
    shipped = family_card()
    changed = {**shipped, "models": {**shipped["models"], "edge": {**shipped["models"]["edge"], "heldout_top1": 0.5}}}
    assert "| 0.500 |" in card.render(changed) and "| 0.500 |" not in card.render(shipped)
