"""The page at ``GET /`` in a real browser: headless Chromium (Debian's ``chromium`` package),
driven by Playwright for Python, against ``citeqa serve`` running as a process on 127.0.0.1
over the bundled articles, with a write key.

Screenshots (answer, no-answer, document and phone views) are written to
``$CITEQA_SCREENSHOTS`` (default: a pytest temporary folder); docs/screenshots/ holds copies.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import CORPUS, copy_index, link_model_cache, running_server

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser fixture fails with the install hint
    expect = sync_playwright = None

CHROMIUM = Path(os.environ.get("CITEQA_CHROMIUM", "/usr/bin/chromium"))
INSTALL_HINT = ("`make install` installs them (Debian's `chromium` package for the browser, "
                "`playwright` from the dev extras to drive it)")
KEY = "web-test-key"
ANSWERABLE = "what did Esper say about the impact on operations in Syria?"
UNANSWERABLE = "what is the tallest mountain in Europe?"
# 🌋 and 𝔸 are outside the BMP: offsets count code points, JavaScript strings UTF-16 units.
LIGHTHOUSE = ("# The Quillon lighthouse 🌋\n\n"
              "The Quillon lighthouse stands on a granite point north of the harbour. 𝔸 keeper "
              "lived there until 1961.\n\n"
              "The lighthouse is painted in red and white bands, so ships can see it by day.\n\n"
              "Its lamp was converted to electricity in 1938.\n")
INJECTION = ("The Zorblax festival <script>window.pwned=1</script> is held every March in the "
             "town of Quillton.\n\n"
             "Visitors bring paper lanterns <img src=x onerror=\"window.pwned=2\"> to the river "
             "on the last night of the Zorblax festival.\n")
INJECTED_QUESTION = "<b>x</b> when is the Zorblax festival held?"


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_cache, bundled_index):
    """`citeqa serve` over the bundled articles, reusing the session's prebuilt index."""
    base = tmp_path_factory.mktemp("web")
    data = link_model_cache(base / "data", model_cache)
    copy_index(bundled_index, data / "index")
    env = {**os.environ, "CITEQA_DATA_DIR": str(data), "CITEQA_API_KEY": KEY}
    env.pop("CITEQA_INDEX_DIR", None)
    with running_server(["--docs", str(CORPUS)], env, base / "server.log") as (url, _):
        yield url


@pytest.fixture(scope="session", autouse=True)
def browser_installed() -> None:
    """Fail (never skip) at once, before any model or server starts, without the browser."""
    if sync_playwright is None:
        pytest.fail("playwright (Python) is not installed: " + INSTALL_HINT, pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found (the browser for the page's tests): " + INSTALL_HINT,
                    pytrace=False)


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=60_000)  # a busy CI machine: answers can take seconds
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("CITEQA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


def _open(browser, width: int = 1280, height: int = 860, **options):
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, errors


@pytest.fixture
def page(browser):
    """A fresh page (1280 px wide); fails the test on any uncaught script error."""
    context, page, errors = _open(browser)
    yield page
    context.close()
    assert not errors, errors


def _ask_by_typing(page, url: str, question: str) -> None:
    page.goto(url + "/")
    box = page.locator("#q")
    box.fill(question)
    box.press("Enter")
    expect(page.locator("#results .question-text")).to_have_text(question)


def _paragraph(url: str, file: str, n: int) -> dict:
    r = httpx.get(f"{url}/documents/{quote(file)}/paragraphs/{n}", timeout=30)
    r.raise_for_status()
    return r.json()


def _text_before(locator, inner: str) -> str:
    """The text of ``locator`` before its first ``inner`` element."""
    return locator.evaluate("""(node, sel) => { const r = document.createRange();
        r.setStart(node, 0); r.setEndBefore(node.querySelector(sel)); return r.toString(); }""",
                            inner)


def _upload(page, url: str, key: str, name: str, content: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    page.goto(url + "/")
    page.locator("#manage > summary").click()
    page.locator("#key").fill(key)
    page.locator("#files").set_input_files(str(path))
    page.locator("#upload-button").click()
    expect(page.locator("#upload-status")).to_have_class(re.compile(r"\b(ok|error)\b"),
                                                         timeout=180_000)


def _delete_via_api(url: str, file: str) -> None:
    httpx.delete(f"{url}/documents/{quote(file)}", headers={"Authorization": f"Bearer {KEY}"},
                 timeout=60)


def test_answer_is_highlighted_in_its_cited_paragraph(server, page, shots) -> None:
    url = server
    expected = httpx.post(f"{url}/ask", json={"question": ANSWERABLE}, timeout=60).json()
    assert expected["answers"]
    page.goto(url + "/")
    expect(page.locator("#doc-list .doc")).to_have_count(3)
    box_before = page.locator("#q").bounding_box()
    page.locator("#q").fill(ANSWERABLE)
    page.locator("#q").press("Enter")  # Enter submits
    cards = page.locator("article.answer")
    expect(cards).to_have_count(len(expected["answers"]))
    assert page.locator("#q").bounding_box() == box_before  # nothing above the box moved
    assert "?q=" in page.url  # the question is in the URL, so the result can be linked

    for i, answer in enumerate(expected["answers"]):
        c = answer["citation"]
        card = cards.nth(i)
        para = _paragraph(url, c["file"], c["paragraph"])
        quote_ = card.locator("blockquote.paragraph")
        # The whole cited paragraph is shown, with exactly file_text[start:end] highlighted.
        assert quote_.text_content() == para["text"]
        assert card.locator("mark.hl").text_content() == answer["text"]
        assert (_text_before(quote_, "mark.hl")
                == para["text"][:c["start"] - para["start"]])
        chip = card.locator(".chip")
        assert chip.text_content() == f"{c['file']} ¶ {c['paragraph']}"
        assert chip.get_attribute("href") == f"#{c['file']}/{c['paragraph']}"
        assert f"score {answer['score']:.2f}" in card.locator(".score").text_content()

    timings = page.locator("#timings").text_content()
    assert all(stage in timings for stage in ("retrieve", "rerank", "extract"))
    expect(page.locator("#passages")).not_to_have_attribute("open", "")
    page.locator("#passages > summary").click()  # passages are collapsible, each cited
    expect(page.locator("#passages .passage .chip")).to_have_count(len(expected["passages"]))
    page.locator("#passages > summary").click()
    page.screenshot(path=shots / "answer.png", animations="disabled")

    page.reload()  # the link reloads the same answer
    expect(page.locator("article.answer mark.hl").first).to_have_text(
        expected["answers"][0]["text"])
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=shots / "answer-dark.png", animations="disabled")


def test_unanswerable_question_shows_the_no_answer_state(server, page, shots) -> None:
    url = server
    expected = httpx.post(f"{url}/ask", json={"question": UNANSWERABLE}, timeout=60).json()
    assert expected["no_answer"] and expected["passages"]
    _ask_by_typing(page, url, UNANSWERABLE)
    expect(page.locator("#no-answer")).to_contain_text("Not in these articles")
    expect(page.locator("article.answer")).to_have_count(0)
    # The passages that were read are shown (open), each with its citation.
    expect(page.locator("#passages")).to_have_attribute("open", "")
    passages = page.locator("#passages .passage")
    expect(passages).to_have_count(len(expected["passages"]))
    for i, p in enumerate(expected["passages"]):
        assert passages.nth(i).locator(".chip").get_attribute("href") == (
            f"#{p['file']}/{p['paragraph']}")
        assert passages.nth(i).locator("p").text_content() == p["text"]
    page.screenshot(path=shots / "no-answer.png", animations="disabled")


def test_citation_link_opens_the_cited_paragraph(server, page, shots) -> None:
    url = server
    page.goto(url + "/?q=" + quote(ANSWERABLE))  # a linked question is asked on load
    first = page.locator("article.answer").first
    expect(first.locator("mark.hl")).to_be_visible()
    file, n = first.get_attribute("data-file"), int(first.get_attribute("data-paragraph"))
    answer_text = first.locator("mark.hl").text_content()
    chip = first.locator(".chip")
    chip.focus()
    page.keyboard.press("Enter")  # keyboard alone
    page.wait_for_url(f"**#{file}/{n}")
    expect(page.locator("#doc-view")).to_be_visible()
    expect(page.locator("#doc-title")).to_have_text(file)
    target = page.locator("#paragraphs .para.target")
    expect(target).to_have_count(1)
    expect(target).to_be_in_viewport()
    assert int(target.get_attribute("data-paragraph")) == n
    assert target.locator(".num").text_content() == f"¶ {n}"
    assert target.locator(".text").text_content() == _paragraph(url, file, n)["text"]
    assert target.locator("mark.hl").text_content() == answer_text
    # Paragraphs are numbered as citations count them: 1..N, every block.
    count = next(d["paragraphs"] for d in httpx.get(f"{url}/documents").json()["documents"]
                 if d["file"] == file)
    numbers = page.locator("#paragraphs .para").evaluate_all(
        "els => els.map(e => Number(e.dataset.paragraph))")
    assert numbers == list(range(1, count + 1))
    page.screenshot(path=shots / "document.png", animations="disabled")

    # A citation link opened directly (a fresh page) goes to the same place.
    page.goto(f"{url}/#{file}/3")
    expect(page.locator("#paragraphs .para.target")).to_have_attribute("data-paragraph", "3")
    assert (page.locator("#paragraphs .para.target .text").text_content()
            == _paragraph(url, file, 3)["text"])
    page.locator("#back").click()
    expect(page.locator("#doc-list-view")).to_be_visible()


def test_upload_with_the_key_then_ask_about_it(server, page, tmp_path) -> None:
    url = server
    name = "lighthouse.md"
    try:
        _upload(page, url, KEY, name, LIGHTHOUSE, tmp_path)
        expect(page.locator("#upload-status")).to_have_class("message ok")
        expect(page.locator("#upload-status")).to_contain_text(name)
        row = page.locator(f'#doc-list .doc[data-file="{name}"]')
        expect(row).to_contain_text("uploaded")
        assert page.locator("#key").input_value() == KEY
        assert KEY not in page.url  # the key stays in memory: never in the URL or storage
        assert page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"
                             ) == "{}{}"

        page.locator("#q").fill("what colours is the Quillon lighthouse painted in?")
        page.locator("#q").press("Enter")
        first = page.locator("article.answer").first
        expect(first).to_have_attribute("data-file", name)
        # The answer comes after a character outside the BMP: offsets are code points.
        expect(first.locator("mark.hl")).to_have_text(
            "The lighthouse is painted in red and white bands, so ships can see it by day.")

        delete = row.locator("button.delete")
        delete.click()
        expect(delete).to_have_text("Confirm delete")
        delete.click()
        expect(page.locator(f'#doc-list .doc[data-file="{name}"]')).to_have_count(0)
        expect(page.locator("#upload-status")).to_contain_text(f"Deleted {name}")
        files = [d["file"] for d in httpx.get(f"{url}/documents").json()["documents"]]
        assert name not in files
    finally:
        _delete_via_api(url, name)


def test_wrong_key_shows_the_error(server, page, tmp_path) -> None:
    url = server
    _upload(page, url, "not-the-key", "refused.txt", "Nothing to see here.\n", tmp_path)
    status = page.locator("#upload-status")
    expect(status).to_have_class("message error")
    expect(status).to_contain_text("write key was not accepted (401)")
    expect(page.locator('#doc-list .doc[data-file="refused.txt"]')).to_have_count(0)
    # Other API errors are readable too: an unsupported type with the right key.
    page.locator("#key").fill(KEY)
    bad = tmp_path / "slides.pdf"
    bad.write_bytes(b"%PDF-1.4 not text")
    page.locator("#files").set_input_files(str(bad))
    page.locator("#upload-button").click()
    expect(status).to_contain_text("Not accepted (422)")
    expect(status).to_contain_text("slides.pdf")


def test_html_in_articles_and_questions_renders_as_text(server, page, tmp_path) -> None:
    url = server
    name = "festival.txt"
    try:
        _upload(page, url, KEY, name, INJECTION, tmp_path)
        expect(page.locator("#upload-status")).to_have_class("message ok")
        page.locator("#q").fill(INJECTED_QUESTION)
        page.locator("#q").press("Enter")
        expect(page.locator("#results .question-text")).to_have_text(INJECTED_QUESTION)
        first = page.locator("article.answer").first
        expect(first).to_have_attribute("data-file", name)
        expect(first.locator("blockquote")).to_contain_text("<script>window.pwned=1</script>")

        page.locator(f'#doc-list a[href="#{name}"]').click()
        paragraphs = page.locator("#paragraphs .para .text")
        expect(paragraphs).to_have_count(2)
        assert paragraphs.nth(0).text_content() == INJECTION.split("\n\n")[0]
        assert paragraphs.nth(1).text_content() == INJECTION.split("\n\n")[1].rstrip("\n")
        # Rendered literally: no element was made from the text and nothing ran.
        for where in ("#results", "#paragraphs", "#doc-list"):
            assert page.locator(f"{where} script, {where} img, {where} b").count() == 0
        assert page.evaluate("typeof window.pwned") == "undefined"
    finally:
        _delete_via_api(url, name)


def test_the_page_works_375_px_wide(server, browser, shots) -> None:
    url = server
    context, page, errors = _open(browser, width=375, height=812, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    try:
        _ask_by_typing(page, url, ANSWERABLE)
        mark = page.locator("article.answer mark.hl").first
        expect(mark).to_be_in_viewport()
        box = mark.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375
        no_horizontal_scroll = "document.documentElement.scrollWidth <= window.innerWidth"
        assert page.evaluate(no_horizontal_scroll)
        page.screenshot(path=shots / "phone-answer.png", animations="disabled")
        page.locator("article.answer .chip").first.click()
        target = page.locator("#paragraphs .para.target")
        expect(target).to_be_in_viewport()
        assert page.evaluate(no_horizontal_scroll)
        page.screenshot(path=shots / "phone-document.png", animations="disabled")
    finally:
        context.close()
    assert not errors, errors
