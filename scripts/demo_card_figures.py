"""Append the held-out figures of the demo model to its model card (run by train_demo_model.sh).

Usage: python3 scripts/demo_card_figures.py EVAL_DIR CARD.md

EVAL_DIR holds ``evaluation.json`` (``listener evaluate`` on the 20 labelled
Orcasound Lab clips) and ``lpod.json`` (``listener detect --json`` on the L pod
demo recording). Neither was used in training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MARKER = "\n## Held-out check"
SELECTION = "\n## Selection"


def hls_line(folder: Path, local: float) -> str:
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("hls_*.json"))]
    if not docs:
        return ""
    windows = [w["score"] for d in docs for w in d["windows"]]
    seconds = sum(d["duration_s"] for d in docs)
    detected = sum(c["detected"] for d in docs for c in d["clips"])
    return (f"- **{len(docs)} real Orcasound Lab HLS segments** (`shared/data/hls`, "
            f"{seconds:.1f} s, content not labelled; NOT held out: training used them as "
            f"site audio): {sum(s > local for s in windows)} of {len(windows)} windows above "
            f"{local}, highest {max(windows):.2f}; {detected} clip(s) detected.\n")


def section(ev: dict, lpod: dict, hls: str = "") -> str:
    rep = next(iter(ev["models"].values()))
    clips, wins = rep["clips"], rep["windows"]
    c = clips["confusion"]
    th = rep["thresholds"]
    pos_seconds = sum(s["positive"] for clip in lpod["clips"] for s in clip["seconds"])
    pos_windows = sum(w["score"] > th["local"] for w in lpod["windows"])
    detected = sum(clip["detected"] for clip in lpod["clips"])
    rec = rep.get("recommended", {})
    rec_text = (f"local {rec['local_threshold']}, global {rec['global_threshold']} "
                f"(precision {rec['precision']:.2f}, recall {rec['recall']:.2f})"
                if rec.get("reachable") else "not reachable on these 20 clips")

    def ci(m: dict) -> str:
        lo, hi = m["ci95"]
        return f"{m['value']:.2f} (95% CI {lo:.2f}-{hi:.2f})" if lo is not None else "n/a"

    return f"""{MARKER}

Audio never used in training (`listener evaluate`, `listener detect`):

- **20 labelled Orcasound Lab clips** (`shared/data/clips`, 10 calls, 10 no
  calls, 3 s each), decision rule at local {th['local']}, global {th['global']}:
  precision {c['precision']:.2f}, recall {c['recall']:.2f} (tp {c['tp']}, fp {c['fp']},
  tn {c['tn']}, fn {c['fn']}); clip ROC-AUC {ci(clips['roc_auc'])}, PR-AUC
  {ci(clips['pr_auc'])}; per window (local {th['local']}): precision
  {wins['confusion']['precision']:.2f}, recall {wins['confusion']['recall']:.2f}.
  Thresholds for precision >= 0.9: {rec_text}.
- **L pod demo recording** (`listener/data/lpod_orcasound_22050hz.wav`,
  {lpod['duration_s']:.1f} s of L pod calls): {pos_seconds} positive seconds
  (of {sum(len(cl['seconds']) for cl in lpod['clips'])}), {pos_windows} of
  {len(lpod['windows'])} windows score above {th['local']}, clip detected:
  {'yes' if detected else 'no'}.
{hls}
These are small samples: the intervals are wide. The model is a demonstration
trained on about an hour of open audio, not the OrcaHello production model.
"""


def main() -> int:
    folder, card = Path(sys.argv[1]), Path(sys.argv[2])
    ev = json.loads((folder / "evaluation.json").read_text(encoding="utf-8"))
    lpod = json.loads((folder / "lpod.json").read_text(encoding="utf-8"))
    hls = hls_line(folder, float(next(iter(ev["models"].values()))["thresholds"]["local"]))
    text = card.read_text(encoding="utf-8")
    # The selection (scripts/demo_selection.py) runs first and stays after this section.
    at = text.find(SELECTION)
    body, tail = (text[:at], text[at:]) if at >= 0 else (text, "")
    head = body.split(MARKER)[0]
    card.write_text(head.rstrip() + "\n" + section(ev, lpod, hls).rstrip("\n") + "\n" + tail,
                    encoding="utf-8")
    print(section(ev, lpod, hls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
