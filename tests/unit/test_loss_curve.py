"""The pretraining loss curve: a retro-fitted run is drawn on the GPT's step axis, starting at
the step it was initialised from."""
from megatron_retro.training.metrics import loss_curve_figure, plot_loss_curve

ROWS = [{"step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 51)] + [{"step": 50, "valid_loss": 4.0}]


def test_retro_fitted_curve_starts_at_init_step(tmp_path):
    fig = loss_curve_figure(ROWS, init_step=250, init_from="GPT")
    ax = fig.axes[0]
    train = ax.get_lines()[0]
    assert train.get_xdata()[0] == 251 and train.get_xdata()[-1] == 300
    assert ax.get_xlim()[0] == 250
    assert ax.get_xlabel() == "step (initialised from GPT at step 250)"
    plain = loss_curve_figure(ROWS).axes[0]
    assert plain.get_lines()[0].get_xdata()[0] == 1 and plain.get_xlabel() == "step"
    assert loss_curve_figure([{"step": 1, "valid_loss": 3.0}]) is None
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(f'{{"step": {r["step"]}, "loss": {r.get("loss", 1.0)}}}\n' for r in ROWS))
    png = plot_loss_curve(str(metrics), str(tmp_path / "c.png"), 250, "GPT")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
