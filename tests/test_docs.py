"""/docs works on a machine without internet: the page and every asset it loads come from us."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx


class _Links(HTMLParser):
    """Every URL the page would fetch: src/href attributes and the url: of the UI's config."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]

    def handle_data(self, data: str) -> None:
        self.scripts.append(data)


async def test_docs_page_loads_only_local_assets_and_they_are_served(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    links = _Links()
    links.feed(page.text)

    assert sorted(links.urls) == [
        "/docs/assets/favicon-32x32.png",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
    ]
    inline = "".join(links.scripts)
    assert "url: '/openapi.json'" in inline
    assert "http://" not in inline
    assert "https://" not in inline
    for url in links.urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    script = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in script.text
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "Darkroom"


async def test_redoc_is_not_offered_since_it_would_need_a_cdn(client: httpx.AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404
