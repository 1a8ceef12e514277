"""The seed CNN in Keras 3, shared by the benchmarks that compare archlab with Keras.

Import after KERAS_BACKEND is set (the scripts set it to ``torch``).
"""

from __future__ import annotations


def keras_seed_cnn(seed: int, lr: float = 1e-3):
    """The seed example's model, compiled as the seed recipe says, on channels-last (28, 28, 1) images."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
