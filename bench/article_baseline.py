"""The article's training method, re-implemented faithfully as the speed and accuracy reference.

torchvision MNIST through a DataLoader with per-sample ``ToTensor`` + ``Normalize((0.5,), (0.5,))``,
batch 64 with ``shuffle=True``, the article's CNN, Adam lr 1e-3, cross-entropy; test batch 1000.
No convtrain code is used here on purpose.

    python bench/article_baseline.py [--epochs 10] [--data-root DIR]

With ``--worker`` it waits for a line on stdin before each epoch and prints one JSON line per
epoch, so bench/speed.py can alternate it with convtrain.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class CNN(nn.Module):
    """The article's network, layer for layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.conv1(x)))
        x = self.maxpool(self.relu(self.conv2(x)))
        x = x.view(-1, 64 * 7 * 7)
        return self.fc2(self.relu(self.fc1(x)))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--data-root", default=os.environ.get("CONVTRAIN_DATA_ROOT", "data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help="wait for stdin before each epoch; print JSON lines")
    ap.add_argument("--device", default="cpu", help="the article runs on the CPU; cuda moves model and batches there")
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train_dataset = datasets.MNIST(root=args.data_root, train=True, download=False, transform=transform)
    test_dataset = datasets.MNIST(root=args.data_root, train=False, download=False, transform=transform)
    train_loader = DataLoader(train_dataset, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_dataset, batch_size=1000, shuffle=False)

    device = torch.device(args.device)
    model = CNN().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)

    for epoch in range(1, args.epochs + 1):
        if args.worker:
            sys.stdin.readline()
        model.train()
        t0 = time.perf_counter()
        running_loss, steps = 0.0, 0
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            steps += 1
        train_s = time.perf_counter() - t0
        model.eval()
        t0 = time.perf_counter()
        correct = total = 0
        with torch.no_grad():
            for inputs, labels in test_loader:
                inputs, labels = inputs.to(device), labels.to(device)
                predicted = model(inputs).argmax(1)
                total += labels.size(0)
                correct += (predicted == labels).sum().item()
        eval_s = time.perf_counter() - t0
        row = {"epoch": epoch, "train_loss": running_loss / steps, "test_acc": correct / total,
               "train_seconds": train_s, "eval_seconds": eval_s, "peak_rss_mb": peak_rss_mb()}
        print(json.dumps(row) if args.worker else
              f"Epoch [{epoch}/{args.epochs}], Loss: {row['train_loss']:.4f}, test accuracy {100 * row['test_acc']:.2f}%, "
              f"train {train_s:.1f}s, eval {eval_s:.1f}s", flush=True)


if __name__ == "__main__":
    main()
