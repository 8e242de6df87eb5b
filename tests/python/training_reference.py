"""Reference values for tests/test_training.cpp, written into argv[1]/reference.pt (a plain
dict of tensors): the losses computed by Debian's torch, the baseline's warm-up factors and
the learning rates of PyTorch's own schedulers over the epochs."""
import math
import os
import sys

import torch
import torch.nn.functional as F


def batch_hard_triplet(features, labels, margin):
    # An explicit per-anchor loop, independent of the vectorised C++ version.
    losses = []
    for i in range(len(labels)):
        distances = [(features[i] - features[j]).pow(2).sum().clamp_min(1e-12).sqrt()
                     for j in range(len(labels))]
        positives = [distances[j] for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        negatives = [distances[j] for j in range(len(labels)) if labels[j] != labels[i]]
        if positives and negatives:
            losses.append(F.relu(max(positives) - min(negatives) + margin))
    return torch.stack(losses).mean()


def circle(features, labels, m, gamma):
    # The baseline's convert_label_to_similarity + CircleLoss, as published (Sun et al.).
    similarity = (features @ features.t()).view(-1)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    sp = similarity[same.triu(diagonal=1).view(-1)]
    sn = similarity[same.logical_not().triu(diagonal=1).view(-1)]
    ap = torch.clamp_min(-sp.detach() + 1 + m, min=0.)
    an = torch.clamp_min(sn.detach() + m, min=0.)
    logit_p = -ap * (sp - (1 - m)) * gamma
    logit_n = an * (sn - m) * gamma
    return F.softplus(torch.logsumexp(logit_n, dim=0) + torch.logsumexp(logit_p, dim=0))


def warmup_factors(warm_epoch, train_images, batch_size, total_iterations):
    warm_iteration = round(train_images / batch_size) * warm_epoch
    warm_up, factors = 0.1, []
    per_epoch = train_images // batch_size
    for iteration in range(total_iterations):
        epoch = iteration // per_epoch
        if epoch < warm_epoch:
            warm_up = min(1.0, warm_up + 0.9 / warm_iteration)
            factors.append(warm_up)
        else:
            factors.append(1.0)
    return torch.tensor(factors, dtype=torch.float64)


def scheduled_rates(make_scheduler, epochs, lr=0.05, ratio=0.1):
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([{"params": [a], "lr": ratio * lr}, {"params": [b], "lr": lr}],
                          lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = make_scheduler(sgd)
    rates = []
    for _ in range(epochs):
        rates.append([group["lr"] for group in sgd.param_groups])
        sgd.step()
        scheduler.step()
    return torch.tensor(rates, dtype=torch.float64)


def adam_steps(out, name, make_optimizer, steps=3):
    """Three steps of `make_optimizer` over two groups (backbone at a tenth of the lr): the
    starting weights, each step's gradients and the weights after each step into `out`
    (prefix `name`), and the optimizer's state_dict to <name>_state.pt."""
    g = torch.Generator().manual_seed(11)
    weights = [torch.randn(4, 3, generator=g), torch.randn(5, generator=g)]
    out[f"{name}_start_0"], out[f"{name}_start_1"] = (w.clone() for w in weights)
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    optimizer = make_optimizer([{"params": [params[0]], "lr": 0.1 * 0.01},
                                {"params": [params[1]], "lr": 0.01}])
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=g)
            out[f"{name}_grad_{step}_{i}"] = p.grad.clone()
        optimizer.step()
        for i, p in enumerate(params):
            out[f"{name}_after_{step}_{i}"] = p.detach().clone()
    torch.save(optimizer.state_dict(), os.path.join(sys.argv[1], f"{name}_state.pt"))


def main():
    out = {}
    os.makedirs(sys.argv[1], exist_ok=True)
    adam_steps(out, "adam", lambda groups: torch.optim.Adam(groups, weight_decay=5e-4))
    adam_steps(out, "adamw", lambda groups: torch.optim.AdamW(groups, weight_decay=5e-4))
    adam_steps(out, "amsgrad", lambda groups: torch.optim.Adam(groups, weight_decay=5e-4, amsgrad=True))
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(12, 7, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 7, (12,), generator=g)
    out["logits"], out["targets"] = logits, targets
    out["ce"] = F.cross_entropy(logits, targets).reshape(1)
    out["ce_smooth"] = F.cross_entropy(logits, targets, label_smoothing=0.1).reshape(1)

    features = F.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(4).repeat_interleave(4)  # P=4 ids x K=4 images
    labels = labels[torch.randperm(16, generator=g)]
    out["features"], out["labels"] = features, labels
    out["triplet"] = batch_hard_triplet(features, labels, 0.3).reshape(1)
    out["circle"] = circle(features, labels, 0.25, 32.0).reshape(1)

    out["warmup"] = warmup_factors(warm_epoch=5, train_images=100, batch_size=8,
                                   total_iterations=12 * 7)
    epochs = 60
    out["step_rates"] = scheduled_rates(
        lambda sgd: torch.optim.lr_scheduler.StepLR(sgd, step_size=epochs * 2 // 3, gamma=0.1),
        epochs)
    out["cosine_rates"] = scheduled_rates(
        lambda sgd: torch.optim.lr_scheduler.CosineAnnealingLR(sgd, epochs, eta_min=0.01 * 0.05),
        epochs)
    # The strong baseline's schedule: MultiStepLR per epoch, and a linear warm-up per
    # iteration (LinearLR, as fast-reid's WarmupLR "linear"), here over 25 iterations.
    out["multistep_rates"] = scheduled_rates(
        lambda sgd: torch.optim.lr_scheduler.MultiStepLR(sgd, milestones=[40, 70], gamma=0.1), 120)
    out["linear_warmup_rates"] = scheduled_rates(
        lambda sgd: torch.optim.lr_scheduler.LinearLR(sgd, start_factor=0.1, total_iters=25), 40)
    os.makedirs(sys.argv[1], exist_ok=True)
    torch.save(out, os.path.join(sys.argv[1], "reference.pt"))


if __name__ == "__main__":
    main()
