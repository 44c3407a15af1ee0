r"""§3.2.1 Classifier-free guidance with two conditionings (Eq. 3).

The paper factors the conditional density image-first (Bayes' rule, c_I then c_T):

    log p(z | c_I, c_T) = log p(c_T | c_I, z) + log p(c_I | z) + log p(z) + const,

takes the gradient in z (a score is -eps / sigma, so scores and eps combine alike), and
puts a scale on each implicit classifier. That is Eq. 3:

    e~(z, c_I, c_T) = e(z, 0, 0)
                    + s_I * (e(z, c_I, 0) - e(z, 0, 0))      # image classifier  log p(c_I | z)
                    + s_T * (e(z, c_I, c_T) - e(z, c_I, 0))  # text classifier   log p(c_T | c_I, z)

so sampling with e~ follows p(z) p(c_I | z)^s_I p(c_T | c_I, z)^s_T. One network gives all
three e(...) because training dropped the text, the image or both (5% each).
"""

from __future__ import annotations

from typing import TypeVar

from ip2p_lib.infra.errors import UserError

T = TypeVar("T")  # a torch tensor or a numpy array: Eq. 3 is plain arithmetic

PAPER_STEPS, PAPER_TEXT_GUIDANCE, PAPER_IMAGE_GUIDANCE = 100, 7.5, 1.5
GUIDANCE_RULES: tuple[str, ...] = ("paper", "diffusers")


def dual_cfg(eps_text_image: T, eps_image: T, eps_uncond: T, s_image: float, s_text: float) -> T:
    """Eq. 3: combine the three branches e(z, c_I, c_T), e(z, c_I, 0), e(z, 0, 0).

    The terms are added in the authors' order (`CFGDenoiser` in their edit_cli.py, and
    diffusers' pipeline), text term before image term, so results match theirs bit for bit;
    Eq. 3 prints the image term first, which is the same sum.
    """
    return (
        eps_uncond  # e(z, 0, 0): the unconditional prediction
        + s_text * (eps_text_image - eps_image)  # s_T * (e(z, c_I, c_T) - e(z, c_I, 0)): text classifier
        + s_image * (eps_image - eps_uncond)  # s_I * (e(z, c_I, 0) - e(z, 0, 0)): image classifier
    )


def dual_cfg_text_first(eps_text_image: T, eps_text: T, eps_uncond: T, s_image: float, s_text: float) -> T:
    """The other order, log p(z|c_T,c_I) = log p(c_I|c_T,z) + log p(c_T|z) + log p(z) + const:

        e~ = e(z, 0, 0) + s_T (e(z, 0, c_T) - e(z, 0, 0)) + s_I (e(z, c_I, c_T) - e(z, 0, c_T)).

    It needs the text-only branch e(z, 0, c_T) instead of the image-only one, and equals
    Eq. 3 only when s_I = s_T (both are then e0 + s (e(z, c_I, c_T) - e0)).
    """
    return (
        eps_uncond  # e(z, 0, 0)
        + s_text * (eps_text - eps_uncond)  # s_T * (e(z, 0, c_T) - e(z, 0, 0)): text classifier log p(c_T | z)
        + s_image * (eps_text_image - eps_text)  # s_I * (e(z, c_I, c_T) - e(z, 0, c_T)): image classifier log p(c_I | c_T, z)
    )


def uses_all_branches(s_image: float, s_text: float, rule: str = "paper") -> bool:
    """Whether a step evaluates the three branches (True) or only e(z, c_I, c_T) (False).

    "paper" (our default, as the authors' code): always Eq. 3 with three branches, for any
    s_I, s_T. "diffusers": the pipeline's `do_classifier_free_guidance`, on only when
    s_T > 1 and s_I >= 1; otherwise it returns e(z, c_I, c_T) alone. The two agree whenever
    s_T > 1 and s_I >= 1, and at s_T = s_I = 1 (Eq. 3 then reduces to e(z, c_I, c_T)); they
    differ at s_T = 1 with s_I != 1 (diffusers ignores s_I) and whenever s_T < 1 or s_I < 1.
    """
    if rule not in GUIDANCE_RULES:
        raise UserError(f"unknown guidance rule {rule!r}; choose one of {', '.join(GUIDANCE_RULES)}")
    return rule == "paper" or (s_text > 1.0 and s_image >= 1.0)
