// citeqa's page: plain JavaScript over the JSON API (POST /ask, GET /documents,
// GET /documents/{file}/paragraphs/{n}, POST /documents, DELETE /documents/{file}).
// Every piece of user or article text is inserted as text (text nodes, textContent),
// never as HTML. Offsets from the API count Unicode code points (Python str indices), so
// text is sliced by code points here, not by JavaScript's UTF-16 units.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // The README's example questions, offered while the bundled articles are indexed.
  const BUNDLED = ["000_75612bb2e23990a7.txt", "001_2994c3cb9d8ee344.txt", "002_dd898a8205fc9529.txt"];
  const EXAMPLES = [
    "what did Esper say about the impact on operations in Syria?",
    "why was the counter-ISIS campaign paused?",
    "what does Elissa Slotkin say the US will need if it is asked to leave Iraq?",
  ];

  const state = {
    docs: new Map(),        // file -> {file, paragraphs, sha256, source}
    paragraphs: new Map(),  // "file|sha|n" -> Promise<paragraph>
    citations: [],          // the shown answers' citations (and contexts), for the document view
    question: null,         // the question whose answer is shown
    askSeq: 0,
    docSeq: 0,
    key: "",                // the write key: in memory only, never in the URL or storage
  };

  // ---------- DOM helpers (text only) ----------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function setText(node, text) { node.textContent = text; }

  function replace(node, ...children) {
    node.replaceChildren();
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  // Text of `chars` (code points) from absolute offset `base`, with `spans` (absolute
  // {start, end, tag, cls, inner}) wrapped in elements; spans may nest through `inner`.
  function marked(chars, base, spans) {
    const nodes = [];
    const clamp = (x) => Math.max(0, Math.min(chars.length, x - base));
    const parts = spans.map((s) => ({ ...s, a: clamp(s.start), b: clamp(s.end) }))
      .filter((s) => s.b > s.a).sort((x, y) => x.a - y.a);
    let pos = 0;
    for (const s of parts) {
      if (s.a < pos) continue;
      if (s.a > pos) nodes.push(chars.slice(pos, s.a).join(""));
      const inside = chars.slice(s.a, s.b);
      const content = s.inner ? marked(inside, base + s.a, s.inner) : [inside.join("")];
      nodes.push(el(s.tag || "mark", { class: s.cls }, content));
      pos = s.b;
    }
    if (pos < chars.length) nodes.push(chars.slice(pos).join(""));
    return nodes;
  }

  // The highlight of one answer: its span, inside its sentence for the reader extractor.
  function answerSpans(answer) {
    const { start, end } = answer.citation;
    const ctx = answer.context;
    if (ctx && ctx.start <= start && end <= ctx.end) {
      return [{ start: ctx.start, end: ctx.end, tag: "span", cls: "context",
                inner: [{ start, end, cls: "hl" }] }];
    }
    return [{ start, end, cls: "hl" }];
  }

  const cpSlice = (text, a, b) => Array.from(text).slice(a, b).join("");
  const fmtScore = (s) => (s < 0.005 ? "< 0.01" : s.toFixed(2));
  const fmtMs = (ms) => (ms >= 100 ? Math.round(ms) : ms.toFixed(1)) + " ms";
  const docHash = (file, n) => "#" + encodeURIComponent(file) + (n ? "/" + n : "");

  function chip(file, paragraph, extra) {
    return el("a", { class: "chip", href: docHash(file, paragraph),
                     title: "Open " + file + ", paragraph " + paragraph + (extra || "") },
      el("span", { class: "chip-file" }, file), " ", el("span", { class: "chip-para" }, "¶ " + paragraph));
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function readable(status, message, context) {
    const detail = message ? ": " + message : "";
    switch (status) {
      case 0: return "Could not reach the citeqa server. Is it still running?";
      case 401: return context === "nokey"
        ? "This needs the server's write key (401): type it in the Write key box."
        : "The write key was not accepted (401). Check the key and try again.";
      case 403: return "This server does not accept changes (403)" + detail +
        ". Start it with CITEQA_API_KEY set to enable uploads.";
      case 404: return "Not found (404)" + detail + ".";
      case 409: return "Not allowed (409)" + detail + ".";
      case 413: return "Too large (413)" + detail + ".";
      case 415: return "Unsupported file type (415): upload UTF-8 text files (.txt or .md).";
      case 422: return "Not accepted (422)" + detail + ".";
      case 503: return "The index is still loading (503). Try again in a moment.";
      default: return "The server answered " + status + detail + ".";
    }
  }

  async function api(method, path, { json, body, key, context } = {}) {
    const headers = { accept: "application/json" };
    if (json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(json);
    }
    // The key typed by the user (memory only) goes with every call: writes need it, and so do
    // reads on a server started with CITEQA_PROTECT_READS.
    const bearer = key || state.key;
    if (bearer) headers.authorization = "Bearer " + bearer;
    let response;
    try {
      response = await fetch(path, { method, headers, body, credentials: "same-origin" });
    } catch (err) {
      throw new ApiError(0, readable(0));
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
    if (!response.ok) {
      const message = data && typeof data.error === "string" ? data.error : "";
      throw new ApiError(response.status, readable(response.status, message, context));
    }
    return data;
  }

  function getParagraph(file, n) {
    const doc = state.docs.get(file);
    const key = file + "|" + (doc ? doc.sha256 : "?") + "|" + n;
    if (!state.paragraphs.has(key)) {
      const p = api("GET", "/documents/" + encodeURIComponent(file) + "/paragraphs/" + n);
      p.catch(() => state.paragraphs.delete(key));
      state.paragraphs.set(key, p);
    }
    return state.paragraphs.get(key);
  }

  // ---------- asking ----------

  function status(text, kind) {
    const node = $("status");
    setText(node, text || "");
    node.className = "status" + (kind ? " " + kind : "");
  }

  function setBusy(busy) {
    $("ask-button").classList.toggle("busy", busy);
    $("ask-button").setAttribute("aria-disabled", busy ? "true" : "false");
    $("results").classList.toggle("stale", busy);
    $("results").setAttribute("aria-busy", busy ? "true" : "false");
  }

  function questionUrl(question) {
    const url = new URL(window.location.href);
    url.search = question ? "?q=" + encodeURIComponent(question) : "";
    return url;
  }

  async function ask(raw, { push = true } = {}) {
    const question = (raw || "").trim();
    if (!question) {
      status("Type a question first.", "error");
      $("q").focus();
      return;
    }
    $("q").value = question;
    if (push && new URL(window.location.href).searchParams.get("q") !== question) {
      history.pushState({ q: question }, "", questionUrl(question));
    }
    const seq = ++state.askSeq;
    setBusy(true);
    status("Reading the articles…", "working");
    const t0 = performance.now();
    try {
      const res = await api("POST", "/ask", { json: { question } });
      const paragraphs = await Promise.all(res.answers.map(
        (a) => getParagraph(a.citation.file, a.citation.paragraph).catch(() => null)));
      if (seq !== state.askSeq) return;
      renderResult(res, paragraphs, performance.now() - t0);
      const n = res.answers.length;
      status(res.no_answer ? "No answer in these articles."
        : n + (n === 1 ? " answer" : " answers") + ", each highlighted in its paragraph.", "done");
    } catch (err) {
      if (seq !== state.askSeq) return;
      renderError(err.message);
      status(err.message, "error");
    } finally {
      if (seq === state.askSeq) setBusy(false);
    }
  }

  function renderError(message) {
    state.question = null;
    replace($("results"), el("div", { class: "notice error", role: "alert" },
      el("h2", {}, "Something went wrong"), el("p", {}, message)));
    replace($("timings"));
  }

  function renderResult(res, paragraphs, elapsed) {
    state.question = res.question;
    state.citations = res.answers.map((a) => ({ ...a.citation, context: a.context }));
    const nodes = [el("h2", { class: "question", id: "asked" },
      el("span", { class: "visually-hidden" }, "Question: "),
      el("span", { class: "question-text" }, res.question))];
    if (res.no_answer) {
      nodes.push(el("div", { class: "notice no-answer", id: "no-answer" },
        el("h3", {}, "Not in these articles"),
        el("p", {}, "None of the passages below answers this question well enough, so citeqa " +
          "gives no answer rather than a guess. These are the passages it read:")));
    } else {
      nodes.push(el("ol", { class: "answers", "aria-label": "Answers" },
        res.answers.map((a, i) => el("li", {}, answerCard(a, paragraphs[i], i)))));
    }
    nodes.push(passagesBlock(res.passages, res.answers, res.no_answer));
    replace($("results"), nodes);

    const t = res.timings_ms || {};
    const parts = Object.entries(t).map(([k, v]) => k + " " + fmtMs(v));
    parts.push("round trip " + fmtMs(elapsed));
    replace($("timings"), el("span", { class: "visually-hidden" }, "Timings: "), parts.join(" · "));
  }

  function answerCard(answer, para, i) {
    const c = answer.citation;
    const reader = answer.context != null;
    let body;
    if (para && cpSlice(para.text, c.start - para.start, c.end - para.start) === answer.text) {
      body = el("blockquote", { class: "paragraph", cite: docHash(c.file, c.paragraph),
                                dataset: { file: c.file, paragraph: c.paragraph } },
        marked(Array.from(para.text), para.start, answerSpans(answer)));
    } else {
      // The paragraph could not be fetched (or changed since): show the span alone.
      body = el("blockquote", { class: "paragraph" }, el("mark", { class: "hl" }, answer.text));
    }
    return el("article", { class: "answer" + (reader ? " reader" : ""),
                           dataset: { file: c.file, paragraph: c.paragraph, start: c.start, end: c.end },
                           "aria-label": "Answer " + (i + 1) },
      reader ? el("p", { class: "phrase" }, answer.text) : null,
      body,
      el("div", { class: "meta" },
        chip(c.file, c.paragraph, ", characters " + c.start + "–" + c.end),
        el("span", { class: "score", title: "confidence in 0..1" }, "score " + fmtScore(answer.score)),
        reader ? el("span", { class: "kind" }, "phrase in its sentence") : null));
  }

  function passagesBlock(passages, answers, open) {
    const items = passages.map((p) => {
      const spans = answers.filter((a) => a.citation.file === p.file &&
        a.citation.start >= p.start && a.citation.end <= p.end)
        .map((a) => ({ start: a.citation.start, end: a.citation.end, cls: "hl soft" }));
      return el("li", { class: "passage", dataset: { file: p.file, paragraph: p.paragraph } },
        el("div", { class: "meta" }, chip(p.file, p.paragraph),
          el("span", { class: "score" }, "score " + fmtScore(p.score))),
        el("p", {}, marked(Array.from(p.text), p.start, spans)));
    });
    const n = passages.length;
    return el("details", { class: "passages", id: "passages", open: open || null },
      el("summary", {}, n + (n === 1 ? " passage" : " passages") + " read"),
      n ? el("ol", {}, items) : el("p", { class: "muted" }, "No passage was retrieved."));
  }

  // ---------- documents ----------

  async function loadDocuments() {
    try {
      const res = await api("GET", "/documents");
      state.docs = new Map(res.documents.map((d) => [d.file, d]));
      renderDocumentList();
      return true;
    } catch (err) {
      replace($("doc-summary"), err.message);
      return false;
    }
  }

  function renderDocumentList() {
    const docs = [...state.docs.values()];
    const total = docs.reduce((s, d) => s + d.paragraphs, 0);
    setText($("doc-summary"), docs.length
      ? docs.length + (docs.length === 1 ? " file, " : " files, ") + total + " paragraphs indexed."
      : "No documents are indexed yet.");
    replace($("doc-list"), docs.map((d) => el("li", { class: "doc", dataset: { file: d.file } },
      el("a", { class: "doc-link", href: docHash(d.file) }, d.file),
      el("span", { class: "doc-meta" }, d.paragraphs + " ¶ · " + (d.source === "upload" ? "uploaded" : "source")),
      d.source === "upload"
        ? el("button", { type: "button", class: "delete", "aria-label": "Delete " + d.file,
                         onclick: (e) => deleteDocument(d.file, e.currentTarget) }, "Delete")
        : null)));
    const bundled = BUNDLED.every((f) => state.docs.has(f));
    $("examples").hidden = !bundled;
    replace($("example-list"), EXAMPLES.map((q) => el("li", {},
      el("button", { type: "button", class: "example", onclick: () => ask(q) }, q))));
  }

  async function paragraphsOf(file, count) {
    const out = new Array(count);
    let next = 1;
    const worker = async () => {
      while (next <= count) {
        const n = next++;
        out[n - 1] = await getParagraph(file, n);
      }
    };
    await Promise.all(Array.from({ length: Math.min(6, count) }, worker));
    return out;
  }

  function showListView(focus) {
    $("doc-view").hidden = true;
    $("doc-list-view").hidden = false;
    if (focus) $("documents").focus({ preventScroll: true });
  }

  async function openDocument(file, target) {
    const seq = ++state.docSeq;
    let doc = state.docs.get(file);
    if (!doc) {
      await loadDocuments();
      doc = state.docs.get(file);
    }
    $("doc-list-view").hidden = true;
    $("doc-view").hidden = false;
    setText($("doc-title"), file);
    const list = $("paragraphs");
    if (!doc) {
      setText($("doc-meta"), "This file is not indexed (it may have been removed).");
      replace(list);
      return;
    }
    if (list.dataset.file !== file || list.dataset.sha !== doc.sha256) {
      setText($("doc-meta"), "Loading " + doc.paragraphs + " paragraphs…");
      replace(list);
      let paras;
      try {
        paras = await paragraphsOf(file, doc.paragraphs);
      } catch (err) {
        if (seq === state.docSeq) setText($("doc-meta"), err.message);
        return;
      }
      if (seq !== state.docSeq) return;
      list.dataset.file = file;
      list.dataset.sha = doc.sha256;
      replace(list, paras.map((p) => el("li", {
        class: "para" + (p.retrievable ? "" : " noise"), id: "p-" + p.paragraph,
        dataset: { paragraph: p.paragraph, start: p.start }, tabindex: "-1",
        title: p.retrievable ? null : "not searched: a heading, caption or image text" },
      el("a", { class: "num", href: docHash(file, p.paragraph),
                "aria-label": "paragraph " + p.paragraph }, "¶ " + p.paragraph),
      el("p", { class: "text" }, p.text))));
    }
    if (seq !== state.docSeq) return;
    setText($("doc-meta"), doc.paragraphs + " paragraphs · " +
      (doc.source === "upload" ? "uploaded" : "source folder"));
    markCitations(file);
    for (const li of list.querySelectorAll(".para.target")) li.classList.remove("target");
    const li = target ? document.getElementById("p-" + target) : null;
    $("to-answers").hidden = !state.question;
    if (li) {
      li.classList.add("target");
      scrollPanelTo(li);
      li.focus({ preventScroll: true });
    } else {
      scrollPanelTo(null);
      $("documents").focus({ preventScroll: true });
    }
  }

  // Wide screens: the panel scrolls by itself beside the answers, so only it moves.
  // Narrow screens: it sits below the answers, and the window scrolls to it.
  function scrollPanelTo(li) {
    const panel = $("documents");
    if (getComputedStyle(panel).overflowY !== "auto") {
      if (li) li.scrollIntoView({ block: "center" });
      else panel.scrollIntoView({ block: "start" });
      return;
    }
    if (!li) { panel.scrollTop = 0; return; }
    const head = panel.querySelector(".doc-head").offsetHeight;
    const top = li.getBoundingClientRect().top - panel.getBoundingClientRect().top + panel.scrollTop;
    const room = panel.clientHeight - head;
    panel.scrollTop = Math.max(0, top - head - Math.max(12, (room - li.offsetHeight) / 2));
  }

  // The shown answers' spans, highlighted in the open document as well.
  function markCitations(file) {
    for (const li of $("paragraphs").children) {
      const n = Number(li.dataset.paragraph);
      const text = li.querySelector(".text");
      const cites = state.citations.filter((c) => c.file === file && c.paragraph === n);
      const plain = text.textContent;
      const spans = cites.map((c) => answerSpans({ citation: c, context: c.context })).flat();
      if (spans.length) {
        replace(text, marked(Array.from(plain), Number(li.dataset.start), spans));
      } else if (text.querySelector("mark")) {
        replace(text, plain);
      }
    }
  }

  function backToAnswers(event) {
    event.preventDefault();
    $("main").scrollIntoView({ block: "start" });
    const first = document.querySelector("#results .answer .chip, #results .passage .chip");
    if (first) first.focus({ preventScroll: true });
  }

  function route() {
    const hash = window.location.hash.slice(1);
    if (!hash || hash === "documents") {
      showListView(hash === "documents");
      if (hash === "documents") $("documents").scrollIntoView({ block: "start" });
      return;
    }
    const m = /^(.*)\/(\d+)$/.exec(hash);
    let file;
    try { file = decodeURIComponent(m ? m[1] : hash); } catch (err) { file = null; }
    if (!file) { showListView(false); return; }
    openDocument(file, m ? Number(m[2]) : null);
  }

  // ---------- uploads and deletes ----------

  function uploadMessage(text, kind, extra) {
    const node = $("upload-status");
    replace(node, text, extra || null);
    node.className = "message" + (kind ? " " + kind : "");
  }

  async function upload(event) {
    event.preventDefault();
    state.key = $("key").value.trim();
    const files = [...$("files").files];
    if (!files.length) {
      uploadMessage("Choose one or more .txt or .md files first.", "error");
      $("files").focus();
      return;
    }
    const form = new FormData();
    for (const f of files) form.append("file", f, f.name);
    const button = $("upload-button");
    button.disabled = true;
    uploadMessage("Uploading and indexing " + files.length + (files.length === 1 ? " file…" : " files…"), "working");
    try {
      const res = await api("POST", "/documents", { body: form, key: state.key,
                                                    context: state.key ? "key" : "nokey" });
      $("files").value = "";
      await loadDocuments();
      const links = res.documents.map((d, i) => [i ? ", " : " ",
        el("a", { href: docHash(d.file) }, d.file), " (" + d.paragraphs + " ¶)"]);
      uploadMessage("Indexed" + (res.documents.length === 1 ? " 1 file:" : " " + res.documents.length + " files:"),
                    "ok", el("span", {}, links, ". Ask away."));
    } catch (err) {
      uploadMessage(err.message, "error");
    } finally {
      button.disabled = false;
    }
  }

  async function deleteDocument(file, button) {
    if (!button.classList.contains("confirm")) {
      button.classList.add("confirm");
      setText(button, "Confirm delete");
      const reset = () => { button.classList.remove("confirm"); setText(button, "Delete"); };
      button.addEventListener("blur", reset, { once: true });
      return;
    }
    state.key = $("key").value.trim();
    if (!state.key) {
      $("manage").open = true;
      uploadMessage("Type the write key to delete " + file + ".", "error");
      $("key").focus();
      return;
    }
    button.disabled = true;
    try {
      await api("DELETE", "/documents/" + encodeURIComponent(file), { key: state.key });
      await loadDocuments();
      uploadMessage("Deleted " + file + ".", "ok");
    } catch (err) {
      uploadMessage(err.message, "error");
      button.disabled = false;
    }
  }

  // ---------- start ----------

  async function waitUntilReady() {
    for (;;) {
      try {
        const r = await fetch("/ready");
        if (r.ok) return;
      } catch (err) { /* retry */ }
      status("The index is loading…", "working");
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }

  function isTyping(target) {
    return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ||
      target instanceof HTMLSelectElement || (target && target.isContentEditable);
  }

  async function main() {
    $("ask").addEventListener("submit", (e) => { e.preventDefault(); ask($("q").value); });
    $("upload").addEventListener("submit", upload);
    $("to-answers").addEventListener("click", backToAnswers);
    window.addEventListener("hashchange", route);
    window.addEventListener("popstate", () => {
      const q = new URL(window.location.href).searchParams.get("q") || "";
      if (q && q !== state.question) ask(q, { push: false });
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "/" && !isTyping(e.target) && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        $("q").focus();
        $("q").select();
      } else if (e.key === "Escape" && !$("doc-view").hidden && $("documents").contains(e.target)) {
        window.location.hash = "documents";
      }
    });

    const q = new URL(window.location.href).searchParams.get("q");
    if (q) $("q").value = q;
    await waitUntilReady();
    if (!q) status("");
    await loadDocuments();
    if (window.location.hash) route();
    if (q) await ask(q, { push: false });
  }

  main();
})();
