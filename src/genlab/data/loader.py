"""In-memory tensor batches whose order is a pure function of (seed, epoch, position).

Lightning restores a loader that has ``state_dict``/``load_state_dict``; this one records
how many batches of the current epoch training has *consumed* (counted by
``runner.ResumeCursor``, so Lightning's one-batch prefetch doesn't skew it), and on
resume skips exactly those. A run killed mid-epoch therefore continues with the very
batches it would have seen — the basis of bit-exact resume on CPU.

Under DDP each rank takes a strided shard of the same permutation (equal sizes).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset


class TensorData(Dataset):
    """Tensors indexed together along dim 0; fetched a whole batch at a time."""

    def __init__(self, *tensors: torch.Tensor):
        assert all(len(t) == len(tensors[0]) for t in tensors), "tensors differ in length"
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i):
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, idx: list[int]):
        index = torch.as_tensor(idx)
        return tuple(t[index] for t in self.tensors)


def _as_batch(batch):
    return batch


class EpochBatchSampler:
    """Yields index lists; permutation seeded by ``seed`` and the epoch; resumable."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False,
                 batches_per_epoch: int | None = None):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.drop_last, self.batches_per_epoch = drop_last, batches_per_epoch
        self.epoch, self.consumed, self._skip = 0, 0, 0
        self.sampler = self   # Lightning calls `batch_sampler.sampler.set_epoch(e)` at every epoch start

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed, self._skip = epoch, 0, 0

    def _indices(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.batches_per_epoch:   # sampling with replacement: a fixed number of random batches
            idx = torch.randint(self.n, (self.batches_per_epoch * self.batch_size * self._world(),), generator=g)
        else:
            idx = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        rank, world = self._rank(), self._world()
        usable = len(idx) // world * world
        return idx[:usable][rank::world]

    @staticmethod
    def _rank() -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @staticmethod
    def _world() -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def __len__(self) -> int:
        if self.batches_per_epoch:
            return self.batches_per_epoch
        per_rank = self.n // self._world()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self):
        batches = list(self._indices().split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        skip, self._skip = self._skip, 0
        for b in batches[skip:]:
            yield b.tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed, self._skip = state["epoch"], state["consumed"], state["consumed"]


class ResumableLoader(DataLoader):
    """A DataLoader over ``TensorData`` with an ``EpochBatchSampler`` (Lightning sees it as stateful)."""

    def __init__(self, data: TensorData, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = False,
                 batches_per_epoch: int | None = None):
        sampler = EpochBatchSampler(len(data), batch_size, seed, shuffle, drop_last, batches_per_epoch)
        super().__init__(data, batch_sampler=sampler, collate_fn=_as_batch, num_workers=0)

    @property
    def generator(self) -> torch.Generator:
        """A fresh private generator for the base seed every new iterator draws (unused with no workers):
        drawn from torch's global RNG instead, each epoch start would shift the model's random stream,
        and a run resumed at an epoch's end would not replay it. (A stored Generator would also break
        pickling the loader into ``ddp_spawn`` workers.)"""
        return torch.Generator()

    @generator.setter
    def generator(self, _) -> None:   # DataLoader.__init__ assigns None here
        pass

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


def loader(*tensors: torch.Tensor, batch_size: int, seed: int = 0, train: bool = True,
           batches_per_epoch: int | None = None) -> ResumableLoader:
    """Shuffled (train) or ordered (eval) batches over in-memory tensors."""
    return ResumableLoader(TensorData(*tensors), batch_size, seed, shuffle=train, drop_last=False,
                           batches_per_epoch=batches_per_epoch)
