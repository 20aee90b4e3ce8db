"""Make ``frontend_golden.npz``: real torchaudio outputs the frontend must match.

Not run by the tests (torchaudio is not a dependency of listener). To remake
the file, in a throwaway environment outside the repository::

    python3 -m venv /tmp/ta
    /tmp/ta/bin/pip install torch==2.9.1 'torchaudio==2.9.*' numpy scipy soundfile
    /tmp/ta/bin/python tests/data/make_frontend_golden.py \
        ../shared/data/recordings/lpod_orcasound_22050hz.wav tests/data/frontend_golden.npz

It does what the trained pipeline did, independently of listener's code:
three 2 s windows of the L pod recording (22 050 Hz mono, see ATTRIBUTION.md)
are each resampled on their own to 20 kHz with ``resample_poly(x, 400, 441)``,
then go one at a time through ``torchaudio.transforms.MelSpectrogram(n_fft=2560,
hop_length=256, n_mels=256, f_max=10000)`` with ``sample_rate`` left at its
16 000 default, then ``AmplitudeToDB(top_db=100)``. One window at a time
because AmplitudeToDB takes its top_db maximum over every channel of the
tensor it is given; the trained pipeline saw one window per call.

Saved arrays (all float32 except the scalars):
- ``starts_s`` (3,): window starts in seconds in the recording.
- ``wave`` (3, 40000): the resampled windows, the frontend's input.
- ``db`` (3, 256, 157): the dB mel spectrograms (default, 16 kHz labelling).
- ``db_sr20000`` (256, 157): window 0 with ``sample_rate=20000`` instead.
- ``fb_16000``, ``fb_20000`` (1281, 256): ``melscale_fbanks(1281, 0, 10000,
  256, rate, norm=None, mel_scale="htk")``.
- ``torch_version``, ``torchaudio_version``: what made them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile
import torch
import torchaudio

log = logging.getLogger("make_frontend_golden")

STARTS_S = (5.0, 14.0, 35.0)
WINDOW_S = 2.0


def main(wav: Path, out: Path) -> None:
    audio, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    if rate != 22050:
        raise SystemExit(f"{wav}: expected 22050 Hz, got {rate}")
    mono = audio.T.mean(axis=0, dtype=np.float32)
    n = int(WINDOW_S * rate)
    waves = []
    for start in STARTS_S:
        i = int(start * rate)
        waves.append(scipy.signal.resample_poly(mono[i:i + n], 400, 441).astype(np.float32))
    wave = np.stack(waves)

    def mel_db(sample_rate: int, x: np.ndarray) -> np.ndarray:
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=2560, hop_length=256, n_mels=256, f_max=10000)
        to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=100)
        return to_db(mel(torch.from_numpy(x)[None]))[0].numpy()

    db = np.stack([mel_db(16000, w) for w in wave])
    db_sr20000 = mel_db(20000, wave[0])
    fbs = {f"fb_{sr}": torchaudio.functional.melscale_fbanks(
        1281, 0.0, 10000.0, 256, sr, norm=None, mel_scale="htk").numpy() for sr in (16000, 20000)}
    np.savez_compressed(out, starts_s=np.array(STARTS_S), wave=wave, db=db,
                        db_sr20000=db_sr20000, torch_version=torch.__version__,
                        torchaudio_version=torchaudio.__version__, **fbs)
    log.info("wrote %s: wave %s, db %s (torch %s, torchaudio %s)", out, wave.shape, db.shape,
             torch.__version__, torchaudio.__version__)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if len(sys.argv) != 3:
        raise SystemExit("usage: make_frontend_golden.py IN.wav OUT.npz")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
