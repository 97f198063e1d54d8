"""``modelweave fv``, ``steer`` and ``ablate-direction``: vectors that steer a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import SteeringError
from .app import DeviceOpt, DtypeOpt, ModelOpt, _load, app, console
from .method_run import SeedsOpt

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
PairsOpt = Annotated[Path, typer.Option("--pairs", help="Contrastive pairs: .jsonl/.json "
                                        "records or .csv/.tsv with positive and negative "
                                        "columns.")]
SiteOpt = Annotated[str, typer.Option(help="Residual-width site kind the vector is read at "
                                      "and added to.")]


@app.command()
def fv(
    task: Annotated[list[str], typer.Option("--task", "-t", help="ICL dataset (antonym, "
                                            "capitalize, country-capital, english-french, "
                                            "next-item, present-past, singular-plural) or "
                                            "'all'; repeatable.")],
    model: ModelOpt = "smollm2-135m",
    n_clean: Annotated[int, typer.Option(min=1, help="Clean prompts per task (correct ones "
                                         "give the head means).")] = 30,
    n_corrupt: Annotated[int, typer.Option(min=1, help="Shuffled-label prompts per task for "
                                           "the head effects.")] = 10,
    n_eval: Annotated[int, typer.Option(min=1, help="Prompts per task for accuracy.")] = 30,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Heads in the FV.")] = 10,
    shots: Annotated[int, typer.Option(min=1, help="Demonstrations per prompt.")] = 10,
    layer: Annotated[int | None, typer.Option(help="Layer the FV is added at for the headline "
                                              "(default n_layers // 3).")] = None,
    layers: Annotated[str | None, typer.Option(help="Layers swept, comma-separated, or "
                                               "'all' (default).")] = None,
    effect_layers: Annotated[str | None, typer.Option(help="Layers whose heads' effects are "
                                                      "measured (default all).")] = None,
    test_fraction: Annotated[float, typer.Option(min=0.01, max=0.99, help="Share of each "
                                                 "task's word pairs held out: the accuracy "
                                                 "uses only their query words.")] = 0.3,
    null_draws: Annotated[int, typer.Option(min=0, help="Random-head FVs (matched by layer) "
                                            "and equal-norm random vectors beside the FV.")]
    = 20,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (default "
                                             "runs/fv).")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Function vectors (Todd et al. 2023): head effects on train word pairs, the FV of the
    top heads, accuracy on held-out query words zero-shot and on shuffled-label prompts with
    and without it, beside random-head FVs; intervals over prompts. Writes fv.json,
    fv.safetensors and figures to --out."""
    from ..report.steering import null_cell, with_ci
    from .method_run import default_out, run_method

    def show(done) -> None:
        s = done.summary
        table = Table(title=f"Function vectors of {done.model.name} at layer {s['fv_layer']} "
                            f"({len(s['heads'])} heads)")
        for col in ("task", "correct", f"{shots}-shot", "zero-shot", "+FV", "random heads",
                    "shuffled", "+FV", "random heads"):
            table.add_column(col)
        for r in s["tasks"]:
            if "zero_shot_none" not in r:
                table.add_row(r["task"], f"{r['n_correct']}", "-", *["-"] * 6)
                continue
            table.add_row(r["task"], str(r["n_correct"]), with_ci(r, "ceiling_10shot"),
                          *(f(r, k) for s_ in ("zero_shot", "shuffled")
                            for f, k in ((with_ci, f"{s_}_none"), (with_ci, f"{s_}_fv"),
                                         (null_cell, f"{s_}_fv_null"))))
        console.print(table)
        if not s["heads"]:
            console.print(f"[yellow]no task had a query answered correctly {shots}-shot, so "
                          "there are no head effects and no function vector[/yellow]")
            return
        console.print("heads: " + ", ".join(f"a{L}.h{h}" for L, h in s["heads"]))

    params = {"datasets": task, "n_clean": n_clean, "n_corrupt": n_corrupt, "n_eval": n_eval,
              "top_k": top_k, "shots": shots, "layer": layer, "layers": layers,
              "effect_layers": effect_layers, "test_fraction": test_fraction,
              "null_draws": null_draws}
    run_method("fv", model=model, task=None, params=params, n=n_eval, seed=seed,
               out=out or default_out("fv"), json_out=json_out, device=device, dtype=dtype,
               show=show, seeds=seeds)


@app.command()
def steer(
    pairs: PairsOpt,
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Prompt to continue; "
                                              "repeatable.")],
    model: ModelOpt = "smollm2-135m",
    layer: Annotated[int, typer.Option(help="Block whose output is read and steered.")] = 6,
    scale: Annotated[float, typer.Option(help="Multiplier of the vector.")] = 4.0,
    positions: Annotated[str, typer.Option(help="all, last, N, N: or N:M (absolute token "
                                           "indices, generated tokens included).")] = "all",
    method: Annotated[str, typer.Option(help="mean, pca or pca_centred.")] = "mean",
    site: SiteOpt = "hook_resid_post",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 24,
    temperature: Annotated[float, typer.Option(min=0, help="0 = greedy.")] = 0.0,
    words: Annotated[list[str] | None, typer.Option("--word", "-w", help="Target word; "
                                                    "repeatable. The effect on the share of "
                                                    "continuations with one is reported "
                                                    "beside equal-norm random vectors.")]
    = None,
    null_draws: Annotated[int, typer.Option(min=0, help="Equal-norm random vectors steered "
                                            "the same way (with --word).")] = 10,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    save: Annotated[Path | None, typer.Option(help="Save the vector (PATH.safetensors + "
                                              "PATH.json).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Results folder: steer.json and "
                                             "the vector (default runs/steer).")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Contrastive activation addition: the mean difference (or PCA direction) of the pairs'
    block outputs at --layer, added with --scale while generating; prints unsteered and
    steered continuations."""
    from .method_run import default_out, run_method

    def show(done) -> None:
        s, result = done.summary, done.load()
        table = Table(title=f"{done.model.name}: {method} vector of {s['n_pairs']} pairs, "
                            f"{site} of layer {s['layer']} (norm {s['norm']:.2f}) x {scale}",
                      show_lines=True)
        for col in ("prompt", "unsteered", "steered"):
            table.add_column(col, overflow="fold")
        for r in result["generations"]:
            table.add_row(r["prompt"], r["unsteered"], r["steered"])
        console.print(table)

    params = {"pairs": str(pairs), "prompts": list(prompt), "layer": layer, "scale": scale,
              "positions": positions, "method": method, "site": site,
              "max_new_tokens": max_new_tokens, "temperature": temperature,
              "words": list(words) if words else None, "null_draws": null_draws}
    done = run_method("steer", model=model, task=None, params=params, n=len(prompt),
                      seed=seed, out=out or default_out("steer"), json_out=json_out,
                      device=device, dtype=dtype, show=show, seeds=seeds)
    if save:
        from ..methods.steering.vectors import SteeringVectors

        saved = SteeringVectors.load(done.folder / "vector").save(save)
        if not json_out:
            console.print(f"vector: {saved}", highlight=False, soft_wrap=True)


def _read_vector(path: Path, layer: int | None):
    """A direction from a file: a saved SteeringVectors (PATH.json beside), .safetensors with
    one tensor, .pt, .npy or a .json list; a float tensor."""
    import torch

    found = _read_vector_file(path, layer)
    try:
        return torch.as_tensor(found, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise SteeringError(f"vector file {path}: expected one vector of numbers, got "
                            f"{type(found).__name__}") from None


def _read_vector_file(path: Path, layer: int | None):
    import torch

    if not path.exists() and not path.with_suffix(".json").exists():
        raise SteeringError(f"vector file {path} does not exist")
    if path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists():
        from ..methods.steering.vectors import SteeringVectors

        sv = SteeringVectors.load(path)
        return sv.at(layer if layer is not None else sv.layers[0])
    if path.suffix == ".safetensors":
        from ..io import load_tensors

        tensors = list(load_tensors(path, error=SteeringError).values())
        if len(tensors) != 1:
            raise SteeringError(f"{path}: expected one tensor, found {len(tensors)}")
        return tensors[0]
    if path.suffix in (".pt", ".npy"):
        import numpy as np

        try:
            return torch.load(path, map_location="cpu") if path.suffix == ".pt" else (
                np.load(path))
        except Exception as err:  # noqa: BLE001 - any unpickling failure means unreadable
            raise SteeringError(f"vector file {path}: cannot read it ({type(err).__name__}); "
                                "save one tensor with torch.save or numpy.save") from None
    if path.suffix == ".json":
        from ..io import read_json

        return read_json(path, error=SteeringError)
    raise SteeringError(f"vector file {path}: use .safetensors, .pt, .npy or .json")


@app.command("ablate-direction")
def ablate_direction_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the edited checkpoint.")],
    model: ModelOpt = "smollm2-135m",
    pairs: Annotated[Path | None, typer.Option("--pairs", help="Direction = mean difference "
                                               "of these contrastive pairs at --layer.")]
    = None,
    vector: Annotated[Path | None, typer.Option("--vector", help="Direction from a file "
                                                "(.safetensors, .pt, .npy, .json, or a "
                                                "vector saved by steer --save).")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer the pairs are read at (default "
                                              "n_layers // 3).")] = None,
    site: SiteOpt = "hook_resid_pre",
    check: Annotated[str, typer.Option(help="Prompt on which the edited weights are checked "
                                       "against the hook-based ablation.")]
    = "The capital of France is",
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Directional ablation as a weight edit (Arditi et al. 2024): project the direction out
    of every matrix that writes the residual stream (embedding, attention and MLP outputs,
    their biases; tied embeddings untied) and save the model to --out. Refused where it is not
    equivalent to ablating with hooks (OLMo-2's post-norms)."""
    import torch

    from ..io import atomic_path
    from ..methods.steering.ablation import ablate_direction, check_weight_edit, save_ablated
    from ..methods.steering.vectors import contrastive_vectors, load_pairs_file

    if (pairs is None) == (vector is None):
        raise SteeringError("give the direction with exactly one of --pairs or --vector")
    loaded = _load(model, device, dtype)
    check_weight_edit(loaded)
    if pairs is not None:
        positives, negatives = load_pairs_file(pairs)
        read_at = loaded.cfg.n_layers // 3 if layer is None else layer
        direction = contrastive_vectors(loaded, positives, negatives, layers=read_at,
                                        site=site).vectors[0]
    else:
        direction = _read_vector(vector, layer)
    with ablate_direction(loaded, direction):
        hooked = loaded(check)
    save_ablated(loaded, direction, out)
    from ..models import load_model

    edited = load_model(str(out), device=device, dtype=dtype)
    diff = float((edited(check) - hooked).abs().max())
    r = direction.float() / direction.float().norm()
    info = {"model": loaded.name, "out": str(out), "norm": float(direction.norm()),
            "max_logit_diff_vs_hooks": diff,
            "max_embedding_component": float((edited.hf_model.get_input_embeddings().weight
                                              .detach().float() @ r.to(edited.device))
                                             .abs().max())}
    with atomic_path(out / "direction.pt") as tmp:
        torch.save(direction.float().cpu(), tmp)
    if json_out:
        print(json.dumps(info))
        return
    console.print(f"saved the ablated model to {out} (direction norm {info['norm']:.3f}); "
                  f"max |logit(edited) - logit(hooks)| on {check!r}: {diff:.2e}",
                  highlight=False, soft_wrap=True)
