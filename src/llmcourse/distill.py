"""Knowledge distillation: a small *student* learns to mimic a large *teacher* (Hinton et al., 2015).

The teacher's output is a whole probability distribution over the next token, not just the one
right answer. "Which wrong answers are *almost* right" is what Hinton called the *dark knowledge*;
a student trained on those soft targets gets more information per example than from the hard
label alone. Three pieces:

* `softened_softmax(logits, T)`: softmax(logits / T); a temperature T > 1 spreads the mass so
  that the small probabilities become visible.
* `soft_target_loss(student_logits, teacher_logits, T)`: KL(p_teacher^T || p_student^T), the
  teacher's softened distribution first (it is the target; KL is not symmetric).
* `distillation_loss(...)`: alpha * T^2 * KL + (1 - alpha) * CE(student, labels). The T^2 keeps
  the soft term's gradient the same size whatever T is (its gradient carries a factor 1/T^2;
  see `soft_gradient_norm`).

`teacher_batches(teacher, tokens, ...)` runs the teacher once over a fixed set of batches and
`distill(student, batches, ...)` trains a student on them with that loss (alpha = 0 is ordinary
training on the hard labels, the baseline to beat).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse.train import TrainConfig, TrainingHistory, get_batch, make_optimizer, optimizer_step
from llmcourse.validate import check_int, check_number



def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must have the same shape (..., vocab); got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if student_logits.dim() < 1:
        raise ValueError("student_logits must have at least one axis (..., vocab)")


def softened_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) over the last axis: T = 1 is the ordinary softmax, T > 1 flattens it.

        softened_softmax(tensor([2., 1., 0.]), 1) -> [0.665, 0.245, 0.090]
        softened_softmax(tensor([2., 1., 0.]), 4) -> [0.419, 0.326, 0.254]   (same order, flatter)
    """
    check_number(temperature, "temperature", above=0)
    return torch.softmax(logits / temperature, dim=-1)


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p || q), p = softened teacher, q = softened student, averaged over all positions (nats).

    student_logits, teacher_logits: (..., vocab). The teacher is the target: the sum runs over
    p * (log p - log q), so the student pays most where the *teacher* puts mass. Equals
    F.kl_div(log q, p, reduction="batchmean") on the flattened (positions, vocab) tensors, also
    when the teacher gives a token probability 0 (a top-k or masked teacher): 0 log 0 = 0.
    """
    _check_pair(student_logits, teacher_logits)
    check_number(temperature, "temperature", above=0)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)         # (..., V) student
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)         # (..., V) teacher
    p = log_p.exp()
    terms = p * (log_p - log_q)                                         # NaN where p = 0 (0 x -inf)
    kl = terms.where(p > 0, torch.zeros_like(terms)).sum(-1)            # (...,) one KL per position
    return kl.mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.'s loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).

    student_logits, teacher_logits: (..., vocab); labels: (...) int64 token ids. alpha in [0, 1]
    weighs the soft targets against the hard labels (alpha = 0: ordinary training; alpha = 1:
    pure mimicry). The cross-entropy uses the student's *unsoftened* logits (T = 1).

        distillation_loss(s, t, y, temperature=2.0, alpha=0.5)
        == 0.5 * 4 * soft_target_loss(s, t, 2.0) + 0.5 * F.cross_entropy(s.flatten(0, -2), y.flatten())
    """
    _check_pair(student_logits, teacher_logits)
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"labels must have shape {tuple(student_logits.shape[:-1])} (the logits without the "
                         f"vocab axis); got {tuple(labels.shape)}")
    check_number(alpha, "alpha", minimum=0, maximum=1)
    hard = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), labels.reshape(-1))
    if alpha == 0:
        return hard
    soft = soft_target_loss(student_logits, teacher_logits, temperature)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard


def soft_gradient_norm(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, *,
                       scale_by_t2: bool = True) -> float:
    """Size (L2 norm) of the gradient of the soft term with respect to the student's logits.

    Without the T^2 factor the gradient shrinks roughly like 1/T^2 (for large T,
    d KL / d z_i ~ (z_i - v_i) / (V T^2) with centred logits); with it the size stays about the same.
    """
    z = student_logits.detach().clone().requires_grad_(True)
    loss = soft_target_loss(z, teacher_logits.detach(), temperature)
    if scale_by_t2:
        loss = temperature ** 2 * loss
    loss.backward()
    return z.grad.norm().item()


def teacher_batches(teacher, tokens: torch.Tensor, *, n_batches: int, batch_size: int = 16,
                    context_length: int = 32, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """n_batches random windows of `tokens`, each with the teacher's logits: [(x, y, teacher_logits), ...].

    x, y: (B, T) inputs and next tokens; teacher_logits: (B, T, V). The teacher runs once per
    batch here, so several students can be trained on exactly the same data and targets without
    paying for the (big) teacher again. teacher=None leaves teacher_logits out (None).
    """
    check_int(n_batches, "n_batches")
    generator = torch.Generator().manual_seed(seed)
    batches = []
    with torch.no_grad():
        for _ in range(n_batches):
            x, y = get_batch(tokens, batch_size, context_length, generator)      # (B, T) each
            batches.append((x, y, None if teacher is None else teacher.eval()(x)[0]))  # (B, T, V)
    return batches


def distill(student, batches, *, steps: int, temperature: float = 2.0, alpha: float = 0.9,
            learning_rate: float = 3e-3, progress=None) -> TrainingHistory:
    """Train `student` (a GPT) for `steps` AdamW steps, cycling through `batches`.

    Returns the TrainingHistory: the distillation loss of every step (no validation loss).

    batches: from `teacher_batches`, [(x, y, teacher_logits), ...]. alpha = 0 trains on the hard
    labels y only (the baseline); alpha > 0 mixes in the teacher's soft targets at `temperature`
    with `distillation_loss`. `progress`, if given, is called once per step (e.g. a tqdm bar's update).
    """
    check_int(steps, "steps")
    if not batches:
        raise ValueError("batches must be a non-empty list of (x, y, teacher_logits); see teacher_batches")
    if alpha > 0 and batches[0][2] is None:
        raise ValueError("alpha > 0 needs the teacher's logits; build the batches with teacher_batches(teacher, ...)")
    device = next(student.parameters()).device
    optimizer = make_optimizer(student, TrainConfig(learning_rate=learning_rate, min_lr=learning_rate,
                                                    weight_decay=0.0, beta2=0.999), device)
    student.train()
    history = TrainingHistory()
    for step in range(steps):
        x, y, teacher_logits = batches[step % len(batches)]
        logits, _ = student(x.to(device))                                 # (B, T, V)
        if teacher_logits is None:
            teacher_logits = logits.detach()                              # unused when alpha = 0
        loss = distillation_loss(logits, teacher_logits.to(device), y.to(device),
                                 temperature=temperature, alpha=alpha)
        optimizer_step(student, optimizer, loss, grad_clip=1.0)
        history.step.append(step)
        history.train_loss.append(loss.item())
        if progress is not None:
            progress()
    student.eval()
    return history


def teacher_sampled_batches(teacher, tokenizer, tokens: torch.Tensor, *, n_batches: int, batch_size: int = 16,
                            context_length: int = 32, prompt_length: int = 8, temperature: float = 1.0,
                            seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, None]]:
    """Data for *sequence-level* distillation (Kim & Rush, 2016): text written by the teacher.

    The same random windows as `teacher_batches(seed=seed)`, but only their first `prompt_length`
    tokens are kept; the teacher samples the rest (at `temperature`, with the KV cache). The
    student then trains on the teacher's text with the ordinary next-token loss (alpha = 0):
    it learns what the teacher *writes*, not the teacher's whole distribution at each position.
    Returns [(x, y, None), ...] with x, y: (B, T), y = x shifted by one.
    """
    from llmcourse.generation import GPTAdapter, generate
    from llmcourse.sampling import SamplingConfig

    check_int(n_batches, "n_batches")
    if not 1 <= prompt_length <= context_length:
        raise ValueError(f"prompt_length must be in [1, context_length = {context_length}]; got {prompt_length!r}")
    generator = torch.Generator().manual_seed(seed)
    prompts = [get_batch(tokens, batch_size, context_length, generator)[0][:, :prompt_length] for _ in range(n_batches)]
    prompts = torch.cat(prompts)                                                 # (n_batches * B, prompt_length)
    new = generate(GPTAdapter(teacher.eval(), tokenizer), prompts.tolist(), context_length + 1 - prompt_length,
                   SamplingConfig(temperature=temperature), generator=torch.Generator().manual_seed(seed + 1))
    text = torch.cat([prompts, torch.as_tensor(new.tokens)], dim=1)              # (n_batches * B, T + 1)
    return [(rows[:, :-1], rows[:, 1:], None) for rows in text.split(batch_size)]
