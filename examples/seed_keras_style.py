"""The seed document's MNIST example, written in archlab's Keras-style API.

    ARCHLAB_DATA=../shared/data python examples/seed_keras_style.py [--epochs 10]

The same listing a Keras user writes: Sequential, compile, fit with validation_split, evaluate.
It trains on archlab's engine and records a run directory under runs/.
"""

from __future__ import annotations

import argparse

import archlab
from archlab import layers
from archlab.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mnist = load_dataset("mnist")  # (60000, 1, 28, 28) in [0, 1]; labels 0-9

    model = archlab.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(1, 28, 28)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="seed-mnist-cnn")
    print(model.summary())

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], seed=args.seed)
    history = model.fit(mnist.x_train, mnist.y_train, epochs=args.epochs, batch_size=128, validation_split=0.1)
    test_loss, test_accuracy = model.evaluate(mnist.x_test, mnist.y_test)
    print(f"run: {history.run_dir}")
    print(f"test accuracy {test_accuracy:.4f} (loss {test_loss:.4f})")


if __name__ == "__main__":
    main()
