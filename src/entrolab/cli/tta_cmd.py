"""``entrolab tta``: test-time adaptation of the cached digits CNN on a corrupted stream.

Example::

    entrolab tta --method deyo --method tent --corruption gauss_noise --severity 5 \\
        --stream long --open-set --lr 1e-2 --out runs/tta

runs each method on the same stream (a fresh copy of the source model per method), prints
accuracy (known classes), open-set AUROC and the selected-sample fraction, and writes
``OUT/results.json`` and ``OUT/accuracy.png`` (accuracy over the stream). The source model is
trained once (a few seconds) and cached under ``$ENTROLAB_CACHE/tta``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from entrolab.errors import EntrolabError
from entrolab.fileio import atomic_write_text

console = Console()

#: --stream preset → repeats of the test split (each with a fresh corruption draw).
STREAMS = {"short": 1, "medium": 5, "long": 20}


def tta_command(
    method: Annotated[
        list[str], typer.Option(help="source | norm | tent | woc | deyo (repeatable)")
    ] = ["source", "norm", "tent", "woc", "deyo"],  # noqa: B006
    corruption: Annotated[str, typer.Option(help="corruption name (see entrolab.tta.data)")] = (
        "gauss_noise"
    ),
    severity: Annotated[int, typer.Option(help="1..5 (0 = clean)")] = 5,
    stream: Annotated[str, typer.Option(help="short (1×) | medium (5×) | long (20×)")] = "medium",
    open_set: Annotated[
        bool, typer.Option("--open-set/--closed-set", help="classes 6–9 arrive as unknowns")
    ] = False,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam | sgd")] = "adam",
    batch_size: Annotated[int, typer.Option(help="test batch size")] = 64,
    episodic: Annotated[bool, typer.Option(help="reset the model before every batch")] = False,
    seed: Annotated[int, typer.Option(help="seed of the stream, the shuffles and the model")] = 0,
    epochs: Annotated[int, typer.Option(help="source-model training epochs")] = 15,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/tta"),
) -> None:
    """Adapt the digits CNN to a corrupted stream with TENT / wisdom of crowds / DeYO."""
    import torch

    from entrolab.models import cache_dir
    from entrolab.tta import METHODS, EntropyMinTTA
    from entrolab.tta.data import KNOWN_CLASSES, load_digits, make_stream
    from entrolab.tta.source import SourceConfig, load_or_train
    from entrolab.tta.stream import run_stream, stream_plot

    if stream not in STREAMS:
        raise EntrolabError(f"--stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    for m in method:
        if m not in METHODS:
            raise EntrolabError(f"unknown --method {m!r}; known: {', '.join(METHODS)}")
    data = load_digits()
    k = KNOWN_CLASSES if open_set else 10
    src, meta = load_or_train(data, cache_dir(), SourceConfig(num_classes=k, epochs=epochs))
    s = make_stream(
        data, corruption, severity, repeats=STREAMS[stream], open_set=open_set, seed=seed
    )
    results = []
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for m in method:
            tta = EntropyMinTTA(
                copy.deepcopy(src),
                m,
                optimizer=optimizer,
                lr=lr,
                episodic=episodic,
                seed=seed,  # type: ignore[arg-type]
            )
            results.append(run_stream(tta, s, batch_size))
    finally:
        torch.set_num_threads(n)
    title = (
        f"{corruption} s{severity}, {stream} stream ({len(s.y)} images), "
        f"{'open' if open_set else 'closed'} set, {optimizer} lr {lr:g}"
    )
    table = Table("method", "accuracy", "AUROC", "FPR@95TPR", "OSCR", "selected", title=title)
    for r in results:
        open_cols = ["-" if v is None else f"{v:.3f}" for v in (r.auroc, r.fpr95, r.oscr)]
        table.add_row(r.method, f"{r.accuracy:.3f}", *open_cols, f"{r.selected_fraction:.2f}")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "stream": {
            "corruption": corruption,
            "severity": severity,
            "repeats": STREAMS[stream],
            "open_set": open_set,
            "seed": seed,
            "n": len(s.y),
        },
        "settings": {
            "lr": lr,
            "optimizer": optimizer,
            "batch_size": batch_size,
            "episodic": episodic,
        },
        "source": meta,
        "results": [r.to_dict() for r in results],
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1))
    png = stream_plot(results, out / "accuracy.png", title=title)
    console.print(f"wrote {out / 'results.json'} and {png}")
