"""§4 Results: the paper's figures regenerated (notebook 07).

One module per figure, each with `compute(profile, ...) -> data` (plain JSON-ready numbers, the
same for the same seed) and `plot(data) -> matplotlib Figure`; `ip2p figures` runs them all and
writes `figures/<profile>/figNN_*.png` with the numbers beside each as JSON.

    sdedit     the SDEdit baseline (img2img towards the edited caption), Figure 8's comparison
    metrics    CLIP image similarity and CLIP directional similarity of an edit (Figure 8's axes)
    sweep      many (s_T, s_I) settings edited in one batch, scored by CLIP and by the toy oracle
    fig04      Figure 4: outputs over a grid of s_T and s_I
    fig08      Figure 8: the CLIP trade-off curves over s_I, s_T and SDEdit's strength, and the
               same sweeps judged by the oracle
    fig10      Figure 10: ablations (dataset size, CLIP filter, where synthetic data loses)
    gallery    edits per kind with the oracle's verdict, and failure cases
    explorer   the interactive edit explorer of notebook 07 (ipywidgets), through plain callbacks
    figures    the registry and `ip2p figures`
"""
