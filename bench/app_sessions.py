"""App serving numbers on this machine: N concurrent API sessions against the app on loopback.

    python bench/app_sessions.py --model tiny --sessions 4 --seconds 6

Per session: time from submit to the first streamed segment, pre-roll held, stall-free or not (from the
release time, the measured speed and the video length), encode cost, and whether it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()

    import torch
    from gradio_client import Client

    from videossm.ui import AppConfig, WorkerPool, build_app

    torch.set_num_threads(max(1, os.cpu_count() // 2))
    demo = build_app(WorkerPool(AppConfig(models=(args.model,), devices=("cpu",))))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    timeline = json.dumps({"fps": 16, "segments": [{"start": 0, "prompt": "a red circle moving right on a gray background"}]})
    results: list[dict] = []

    def session(i: int) -> None:
        client = Client(url, verbose=False, download_files=False)
        t0 = time.perf_counter()
        job = client.submit(timeline, args.seconds, "hybrid", i, args.model, api_name="/generate")
        first, queued = None, []
        while not job.done():
            st = job.status()
            if st.rank is not None and st.rank >= 0:
                queued.append(st.rank)
            if first is None and any(isinstance(o[0], dict) and o[0].get("is_stream") for o in job.outputs()):
                first = time.perf_counter() - t0
            time.sleep(0.02)
        try:
            job.result()
            ok = True
        except Exception as e:  # noqa: BLE001 - reported, not raised
            ok = repr(e)
        results.append({"session": i, "first_segment_s": first, "total_s": time.perf_counter() - t0,
                        "max_queue_position": max(queued) if queued else None, "ok": ok})

    threads = [threading.Thread(target=session, args=(i,)) for i in range(args.sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = [s for _, s in demo.videossm_app.sessions.finished]
    demo.close()
    for r in sorted(results, key=lambda r: r["session"]):
        print(json.dumps(r))
    for s in stats:
        speed = s["frames"] / 16 / sum(b["seconds"] for b in s["per_block"])
        print(json.dumps({"speed_x_realtime": round(speed, 2), "first_frame_s": round(s["first_frame_s"], 3),
                          "release_wall_s": round(s["release_wall_s"], 3), "preroll_s": s["preroll_s"], "rebuffers": s["rebuffers"],
                          "encode_ms_mean": round(s["encode_ms_mean"], 1), "lead_wait_s": round(s["lead_wait_s"], 2)}))


if __name__ == "__main__":
    main()
