"""The trainer hook driven by a hand-written loop (the real trainer run is in test_end_to_end.py)."""
import io
from types import SimpleNamespace

import torch

from edgeprune.sparsity.hook import SparsityHook


def _loop(model, teacher, cfg, steps, hook=None, start=0):
    hook = hook or SparsityHook(cfg.sparse)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = SimpleNamespace(model=model, teacher=teacher, epoch=0, step=start, epochs=1, nb=steps, cfg=cfg.train,
                              optimizer=opt)
    hook.on_train_start(trainer)
    gen = torch.Generator().manual_seed(3)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.4], [1, 1, 0.3, 0.6, 0.1, 0.1]])
    for step in range(start, steps):
        trainer.step = step
        imgs = torch.rand(2, 3, 32, 32, generator=gen)
        feats = model.forward_features(imgs)
        loss = sum(f.pow(2).mean() for f in feats) * 0.0          # the detection loss is not under test
        extra = hook.extra_loss(trainer, imgs, targets, feats)
        if extra is not None:
            loss = loss + extra[0]
        opt.zero_grad()
        loss.backward()
        hook.after_backward(trainer, step)
        opt.step()
    hook.on_epoch_end(trainer, 0)
    return hook


def test_hook_drives_sparsity_and_adapts(tiny_model, cfg):
    cfg.sparse.lam = 0.02
    cfg.sparse.refresh_every = 2
    gammas = lambda: torch.cat([m.weight.detach().abs() for m in tiny_model.modules()
                                if isinstance(m, torch.nn.BatchNorm2d)])
    before = gammas()
    hook = _loop(tiny_model, None, cfg, 12)
    assert gammas().sum() < before.sum()
    assert hook.epochs[-1]["zero_share"] > hook.epochs[0]["zero_share"]
    assert len(hook.steps) == 12 and all(s[1] > 0 for s in hook.steps)
    assert hook.reg.importance and any(v != 1.0 for v in hook.reg.lams.values())   # self-adaptation ran


def test_hook_adds_the_attention_loss_with_a_teacher(tiny_model, cfg):
    import copy
    teacher = copy.deepcopy(tiny_model)
    hook = _loop(tiny_model, teacher, cfg, 4)
    assert hook.steps[-1][3] > 0
    cfg.sparse.attention = False
    assert _loop(tiny_model, teacher, cfg, 2).steps[-1][3] == 0.0


def test_hook_state_survives_a_weights_only_checkpoint(tiny_model, cfg):
    hook = _loop(tiny_model, None, cfg, 6)
    buf = io.BytesIO()
    torch.save({"hooks": [hook.state_dict()]}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["hooks"][0]
    fresh = SparsityHook(cfg.sparse)
    fresh.load_state_dict(state)                                       # before on_train_start, as the trainer does
    assert fresh.steps == hook.steps
    fresh = _loop(tiny_model, None, cfg, 8, hook=fresh, start=6)
    assert [s[0] for s in fresh.steps] == list(range(8))


def test_distill_hook_pulls_a_narrower_student_to_the_dense_teachers_attention(cfg):
    from edgeprune.models.spec import new_spec
    from edgeprune.models.yolo import build_model
    from edgeprune.sparsity.hook import DistillHook

    torch.manual_seed(0)
    teacher = build_model(new_spec(2, size="s"))     # twice as wide: attention maps average over channels
    student = build_model(new_spec(2, size="n"))
    hook = DistillHook(cfg.sparse)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    trainer = SimpleNamespace(model=student, teacher=teacher)
    hook.on_train_start(trainer)
    assert not any(p.requires_grad for p in teacher.parameters())
    imgs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2], [1, 1, 0.3, 0.6, 0.1, 0.1]])
    losses = []
    for _ in range(15):
        loss, items = hook.extra_loss(trainer, imgs, targets, student.forward_features(imgs))
        losses.append(items["att"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 0 and losses[-1] < 0.7 * losses[0], losses
    same = SimpleNamespace(model=teacher, teacher=teacher)       # a student equal to its teacher: no loss
    assert hook.extra_loss(same, imgs, targets, teacher.forward_features(imgs))[1]["att"] < 1e-9


def test_distill_args_follow_finetune_distill(cfg, tiny_model, tmp_path):
    from edgeprune.models.io import save_checkpoint
    from edgeprune.sparsity.hook import DistillHook, distill_args

    save_checkpoint(tmp_path / "dense.pt", tiny_model)
    assert distill_args(cfg, tmp_path / "dense.pt") == {}
    cfg.finetune.distill = True
    args = distill_args(cfg, tmp_path / "dense.pt")
    assert isinstance(args["hooks"][0], DistillHook)
    assert torch.equal(args["teacher"].state_dict()["layers.0.conv.weight"],
                       tiny_model.state_dict()["layers.0.conv.weight"])
