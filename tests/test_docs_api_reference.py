"""docs/api-reference.md is generated from the live services' OpenAPI documents; keep them equal."""

from __future__ import annotations

from pathlib import Path

from sim.live.api_reference import render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "api-reference.md"


def test_the_api_reference_page_matches_the_apps() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), (
        "docs/api-reference.md is out of date: run `make api-reference` and commit the page")


def test_every_money_moving_post_documents_its_idempotency_key() -> None:
    page = render()
    for block in page.split("### ")[1:]:
        head = block.split("\n", 1)[0]
        if head.startswith("`POST") and any(word in head for word in ("/transfers", "/authorizations`",
                                                                       "/sells", "/payments`")):
            assert "header `Idempotency-Key` (required)" in block, head
