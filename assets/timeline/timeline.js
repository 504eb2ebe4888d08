// VideoSSM prompt timeline: runs as gr.HTML's js_on_load (element, trigger, props, server, upload, watch).
// props.value  : Timeline JSON string {"fps": 16, "segments": [{"start": 0.0, "prompt": "..."}]}
// props.duration: video length in seconds; props.generated: where generation is (the playhead);
// props.locked : video before this time is generated, its segments cannot change.
// Every accepted edit assigns props.value, which fires the component's .change event (sent to the stream).
(function () {
  const STEP = 0.1; // seconds: starts are rounded to this
  let selected = 0;
  let drag = null; // {index, start} while a segment is being moved
  let lastValue = null;
  let draft = null; // {index, start, prompt}: unsaved editor input, kept across re-renders

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c) node.appendChild(c);
    return node;
  }
  const num = (x, d) => (typeof x === "number" && isFinite(x) ? x : d);
  const round = (t) => Math.round(t / STEP) * STEP;
  const fmt = (t) => (Math.round(t * 100) / 100).toFixed(2).replace(/\.?0+$/, "") + " s";

  function timeline() {
    try {
      const t = JSON.parse(props.value || "{}");
      if (Array.isArray(t.segments) && t.segments.length) return { fps: t.fps || 16, segments: t.segments };
    } catch (e) { /* fall through */ }
    return { fps: 16, segments: [{ start: 0, prompt: "" }] };
  }
  const duration = () => Math.max(num(props.duration, 8), 0.1);
  const locked = () => num(props.locked, 0);
  const generated = () => num(props.generated, 0);
  const isLocked = (seg, i) => i === 0 ? locked() > 0 : seg.start < locked();

  function say(text, isError) {
    const msg = element.querySelector(".vt-msg");
    if (msg) { msg.textContent = text; msg.classList.toggle("vt-error", !!isError); }
  }

  // Validate like videossm.timeline (sorted, first at 0, inside the video, non-empty prompts), then send.
  function commit(segments, note) {
    segments = segments.map((s) => ({ start: round(num(Number(s.start), 0)), prompt: String(s.prompt) }));
    const d = duration();
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i];
      if (i === 0 && s.start !== 0) return say("the first segment must start at 0 s", true), false;
      if (i > 0 && s.start <= segments[i - 1].start) return say(`segment ${i + 1} must start after segment ${i}`, true), false;
      if (s.start >= d) return say(`segment ${i + 1} starts at ${fmt(s.start)}, past the end of the video (${fmt(d)})`, true), false;
      if (!s.prompt.trim()) return say(`segment ${i + 1} has an empty prompt`, true), false;
    }
    const value = JSON.stringify({ fps: timeline().fps, segments });
    draft = null;
    if (value !== props.value) props.value = value; // fires .change: the server applies it to the stream
    say(note || "", false);
    render();
    return true;
  }

  function renderTrack(host) {
    const t = timeline(), d = duration();
    const pct = (x) => `${Math.min(100, Math.max(0, (100 * x) / d))}%`;
    const track = el("div", { class: "vt-track", role: "list", "aria-label": "prompt segments" });
    track.appendChild(el("div", { class: "vt-locked", style: `width:${pct(locked())}`, title: "already generated (locked)" }));
    t.segments.forEach((s, i) => {
      const end = i + 1 < t.segments.length ? t.segments[i + 1].start : d;
      const start = drag && drag.index === i ? drag.start : s.start;
      const seg = el("div", {
        class: "vt-seg" + (i === selected ? " vt-selected" : "") + (isLocked(s, i) ? " vt-seg-locked" : ""),
        style: `left:${pct(start)};width:calc(${pct(end)} - ${pct(start)})`, role: "listitem",
        "data-index": i, title: `${fmt(s.start)}: ${s.prompt}`,
      }, el("span", { class: "vt-seg-label", text: `${i + 1}. ${s.prompt}` }));
      if (i > 0 && !isLocked(s, i)) seg.appendChild(el("div", { class: "vt-handle", "data-index": i, title: "drag to move" }));
      track.appendChild(seg);
    });
    track.appendChild(el("div", { class: "vt-playhead", style: `left:${pct(generated())}`, "data-seconds": generated().toFixed(3) }));
    const axis = el("div", { class: "vt-axis" });
    const tick = [0.5, 1, 2, 5, 10, 30, 60, 120].find((x) => d / x <= 12) || 300;
    for (let x = 0; x <= d + 1e-9; x += tick) axis.appendChild(el("span", { class: "vt-tick", style: `left:${pct(x)}`, text: fmt(x) }));
    const old = host.querySelector(".vt-trackwrap");
    const wrap = el("div", { class: "vt-trackwrap" }, track, axis);
    if (old) old.replaceWith(wrap); else host.prepend(wrap);
    const readout = host.querySelector(".vt-readout");
    if (readout) readout.textContent = `generated ${fmt(generated())} of ${fmt(d)}` + (locked() > 0 ? ` · locked before ${fmt(locked())}` : "");
  }

  function renderEditor(host) {
    const t = timeline();
    if (selected >= t.segments.length) selected = t.segments.length - 1;
    const s = t.segments[selected], lockedNow = isLocked(s, selected);
    const editor = el("div", { class: "vt-editor", role: "group", "aria-label": "edit the selected segment" },
      el("label", { text: `Segment ${selected + 1} of ${t.segments.length} starts at (s)` }),
      el("input", { class: "vt-start", type: "number", step: STEP, min: 0, value: s.start, disabled: lockedNow || selected === 0, "aria-label": "segment start in seconds" }),
      el("label", { text: "Prompt" }),
      el("textarea", { class: "vt-prompt", rows: 2, disabled: lockedNow, "aria-label": "segment prompt" }),
      el("div", { class: "vt-buttons" },
        el("button", { class: "vt-apply", type: "button", disabled: lockedNow, text: "Apply" }),
        el("button", { class: "vt-delete", type: "button", disabled: lockedNow || selected === 0, text: "Delete" }),
        el("button", { class: "vt-add", type: "button", text: "+ Add segment" }),
        el("button", { class: "vt-export", type: "button", text: "Export JSON" }),
        el("button", { class: "vt-import", type: "button", text: "Import JSON" })),
      lockedNow ? el("div", { class: "vt-note", text: "This segment is already (partly) generated and locked." }) : null);
    const keep = draft && draft.index === selected ? draft : null;
    editor.querySelector(".vt-prompt").value = keep ? keep.prompt : s.prompt;
    if (keep) editor.querySelector(".vt-start").value = keep.start;
    const old = host.querySelector(".vt-editor");
    if (old) old.replaceWith(editor); else host.querySelector(".vt-readout").after(editor);
  }

  function render() {
    let host = element.querySelector(".vt");
    if (!host) { host = el("div", { class: "vt" }); element.appendChild(host); }
    if (!host.querySelector(".vt-readout")) {
      host.appendChild(el("div", { class: "vt-readout", "aria-live": "polite" }));
      host.appendChild(el("div", { class: "vt-msg", role: "status" }));
      host.appendChild(el("textarea", { class: "vt-json", rows: 4, placeholder: "Timeline JSON: Export writes it here; paste one and press Import", "aria-label": "timeline JSON" }));
      host.appendChild(el("a", { class: "vt-download", download: "timeline.json", href: "#", text: "download timeline.json", hidden: true }));
    }
    renderTrack(host);
    if (props.value !== lastValue || !host.querySelector(".vt-editor")) { lastValue = props.value; renderEditor(host); }
  }

  function select(i) { selected = i; draft = null; lastValue = null; render(); }

  element.addEventListener("input", (ev) => {
    if (!ev.target.closest || !ev.target.closest(".vt-editor")) return;
    draft = { index: selected, start: element.querySelector(".vt-start").value, prompt: element.querySelector(".vt-prompt").value };
  });

  element.addEventListener("click", (ev) => {
    const t = timeline(), target = ev.target;
    const seg = target.closest && target.closest(".vt-seg");
    if (seg) return select(Number(seg.dataset.index));
    if (target.classList.contains("vt-apply")) {
      const segs = t.segments.map((s) => ({ ...s }));
      const start = element.querySelector(".vt-start"), prompt = element.querySelector(".vt-prompt");
      if (selected > 0 && start.value !== "") segs[selected].start = Number(start.value);
      segs[selected].prompt = prompt.value;
      if (selected > 0 && segs[selected].start < locked()) return say(`segment ${selected + 1} must start at or after the locked ${fmt(locked())}`, true);
      const moved = segs[selected];
      segs.sort((a, b) => a.start - b.start);
      if (commit(segs, `segment ${selected + 1} updated`)) select(segs.indexOf(moved));
    } else if (target.classList.contains("vt-delete")) {
      if (selected === 0) return say("the first segment cannot be deleted", true);
      const segs = t.segments.filter((_, i) => i !== selected);
      if (commit(segs, `segment ${selected + 1} deleted`)) select(selected - 1);
    } else if (target.classList.contains("vt-add")) {
      const last = t.segments[t.segments.length - 1], d = duration();
      const floor = Math.max(last.start, locked(), generated());
      const start = round(floor + Math.max((d - floor) / 2, STEP));
      if (start >= d) return say(`no room for a new segment after ${fmt(floor)} in a ${fmt(d)} video`, true);
      const segs = [...t.segments.map((s) => ({ ...s })), { start, prompt: last.prompt }];
      if (commit(segs, `segment ${segs.length} added at ${fmt(start)}`)) select(segs.length - 1);
    } else if (target.classList.contains("vt-export")) {
      const json = JSON.stringify(t, null, 2);
      element.querySelector(".vt-json").value = json;
      const link = element.querySelector(".vt-download");
      link.href = "data:application/json;charset=utf-8," + encodeURIComponent(json);
      link.hidden = false;
      say("exported: the JSON is in the box below (and the download link)");
    } else if (target.classList.contains("vt-import")) {
      let parsed;
      try { parsed = JSON.parse(element.querySelector(".vt-json").value); } catch (e) { return say(`not valid JSON: ${e.message}`, true); }
      if (!parsed || !Array.isArray(parsed.segments)) return say('a timeline needs "segments": [{"start": 0, "prompt": "..."}]', true);
      if (commit(parsed.segments, `imported ${parsed.segments.length} segment(s)`)) select(0);
    }
  });

  // Move a segment by dragging its handle (the first segment always starts at 0).
  element.addEventListener("pointerdown", (ev) => {
    const handle = ev.target.closest && ev.target.closest(".vt-handle");
    if (!handle) return;
    const i = Number(handle.dataset.index);
    drag = { index: i, start: timeline().segments[i].start };
    handle.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  });
  element.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const track = element.querySelector(".vt-track"), box = track.getBoundingClientRect();
    const segs = timeline().segments;
    const lo = Math.max(segs[drag.index - 1].start + STEP, locked());
    const hi = (drag.index + 1 < segs.length ? segs[drag.index + 1].start : duration()) - STEP;
    drag.start = round(Math.min(hi, Math.max(lo, ((ev.clientX - box.left) / box.width) * duration())));
    renderTrack(element.querySelector(".vt"));
  });
  element.addEventListener("pointerup", () => {
    if (!drag) return;
    const segs = timeline().segments.map((s) => ({ ...s }));
    segs[drag.index].start = drag.start;
    const i = drag.index;
    drag = null;
    if (commit(segs, `segment ${i + 1} moved to ${fmt(segs[i].start)}`)) select(i);
  });

  watch(["value", "duration", "generated", "locked"], render);
  render();
})();
