"""The registry of generated sources: the one table that names models.

Evaluation, report, plotting and the notebooks loop over GENERATORS; nothing else names a
model. Adding a generator is its model module (with its stage `main`), one entry here, its
stage(s) in dvc.yaml and its params.yaml section (README: "Add a generator").

Source labels: "Real", then "<label>-Gen" and, for generators that reconstruct real records,
"<label>-Recon". A generator's stage writes `outputs` as two canonical corpus folders:
`<outputs>/generated` and (when `recon_colour` is set) `<outputs>/recon`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REAL = "Real"
REAL_COLOUR = "black"


@dataclass(frozen=True)
class Generator:
    name: str  # key in metrics.json, matrices.npz, `evaluate --generated NAME=DIR`
    label: str  # source labels "<label>-Gen" / "<label>-Recon"
    title: str  # row name in the score tables
    colour: str  # matplotlib colour of its generated records
    marker: str  # marker in per-source scatter plots
    outputs: str  # folder with generated/ (and recon/), relative to the repository root
    checkpoint: str  # the model file its generation reads
    losses: dict[str, str] = field(default_factory=dict)  # curve title -> losses.tsv
    loss_unit: str = ""  # y-axis label of its training curves ("" = the file's own scale)
    recon_colour: str | None = None  # None: the generator makes no reconstructions
    # its stages' CLI verbs: verb -> (module with main(argv, verb), one-line help)
    commands: dict[str, tuple[str, str]] = field(default_factory=dict)
    # "module:Class" of its params dataclass, read from params.yaml generators.<name>
    # (config.section); "" for the generators whose sections predate the registry
    params: str = ""
    # a record-free sampler (`sample` checkpoint): also generates at the held-out records'
    # scenarios into <outputs>/scenario, scored for scenario fidelity
    record_free: bool = False

    @property
    def gen_label(self) -> str:
        return f"{self.label}-Gen"

    @property
    def recon_label(self) -> str | None:
        return f"{self.label}-Recon" if self.recon_colour else None

    @property
    def has_recon(self) -> bool:
        return self.recon_colour is not None


MSE = "MSE ((cm/s$^2$)$^2$)"

GENERATORS: tuple[Generator, ...] = (
    Generator(
        name="timesnet", label="TimesNet", title="TimesNet-Gen", colour="tab:red", marker="s",
        recon_colour="tab:orange", outputs="outputs/timesnet",
        checkpoint="models/finetune/model.pt",
        losses={"TimesNet phase 0: pre-training": "models/pretrain/losses.tsv",
                "TimesNet-Gen phase 1: fine-tuning": "models/finetune/losses.tsv"},
        loss_unit=MSE,
        commands={
            "pretrain": ("timesnet_gen.train", "phase 0: pre-train TimesNet on non-target stations"),
            "finetune": ("timesnet_gen.train", "phase 1: station-conditioned fine-tuning"),
            "generate": ("timesnet_gen.generate",
                         "generate and reconstruct records with TimesNet-Gen"),
        },
    ),
    Generator(
        name="vae", label="VAE", title="VAE (spectrogram cVAE)", colour="tab:blue", marker="^",
        recon_colour="tab:cyan", outputs="outputs/vae", checkpoint="models/vae/model.pt",
        losses={"VAE baseline": "models/vae/losses.tsv"},
        commands={
            "train-vae": ("timesnet_gen.vae", "train the spectrogram conditional-VAE baseline"),
            "generate-vae": ("timesnet_gen.vae", "generate and reconstruct records with the VAE"),
        },
    ),
    Generator(
        name="flow", label="TimesNet-Flow", title="TimesNet flow sampler (record-free)",
        colour="tab:green", marker="D", outputs="outputs/flow", checkpoint="models/flow/model.pt",
        losses={"TimesNet flow sampler (pretrain, then fine-tune)": "models/flow/losses.tsv"},
        commands={"train-sampler": ("timesnet_gen.sample",
                                    "train the record-free TimesNet flow sampler")},
        params="timesnet_gen.models.flow_sampler:FlowSamplerParams", record_free=True,
    ),
    Generator(
        name="stochastic", label="Stochastic", title="Stochastic reference (fitted, Boore 2003)",
        colour="tab:gray", marker="v", outputs="outputs/stochastic",
        checkpoint="models/stochastic/model.pt",
        commands={"fit-stochastic": ("timesnet_gen.models.stochastic",
                                     "fit the stochastic reference sampler (record-free)")},
        params="timesnet_gen.models.stochastic:StochasticParams", record_free=True,
    ),
)


class RegistryError(KeyError):
    """A name that is not in the registry."""


def generator(name: str) -> Generator:
    for g in GENERATORS:
        if g.name == name:
            return g
    raise RegistryError(f"unknown generator {name!r} (registered: {names()})")


def names() -> list[str]:
    return [g.name for g in GENERATORS]


def source_colours() -> dict[str, str]:
    """Source label -> colour, in the standard order: Real, then each generator's Gen, Recon."""
    out = {REAL: REAL_COLOUR}
    for g in GENERATORS:
        out[g.gen_label] = g.colour
        if g.has_recon:
            out[g.recon_label] = g.recon_colour
    return out


def source_labels() -> tuple[str, ...]:
    return tuple(source_colours())


def generated_labels() -> tuple[str, ...]:
    """Real and every generator's generated records (what records/intensity figures compare)."""
    return (REAL, *(g.gen_label for g in GENERATORS))


def label_of(source: str) -> str:
    """Evaluation source name -> label: "timesnet" -> "TimesNet-Gen", "vae-recon" ->
    "VAE-Recon"; "Real" and names not in the registry are kept as they are."""
    for g in GENERATORS:
        if source == g.name:
            return g.gen_label
        if source == f"{g.name}-recon" and g.has_recon:
            return g.recon_label
    return source


@cache
def paper() -> dict:
    """The paper's published numbers (scores, five stations' table), cited once in the file."""
    return json.loads((Path(__file__).with_name("paper.json")).read_text())
