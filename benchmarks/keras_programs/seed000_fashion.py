# Seed 000's program (../shared/seeds/000*.txt) as the tutorial writes it, in tf.keras syntax, on
# Fashion-MNIST instead of MNIST (MNIST's training images have no offline copy here). Added lines,
# the same for every backend: the seed from $BENCH_SEED, the smoke size from $BENCH_SMALL, fit's
# wall time and one JSON line at the end. keras_side_by_side.py swaps only the imports per backend.
import json
import os
import time

import tensorflow as tf
from tensorflow.keras import layers, models

tf.keras.utils.set_random_seed(int(os.environ.get("BENCH_SEED", "0")))
# Load sample data: Fashion-MNIST (the tutorial loads MNIST handwritten digits)
(train_images, train_labels), (test_images, test_labels) = tf.keras.datasets.fashion_mnist.load_data()
if os.environ.get("BENCH_SMALL") == "1":  # smoke run: a few hundred images
    train_images, train_labels = train_images[:600], train_labels[:600]
    test_images, test_labels = test_images[:200], test_labels[:200]
# Normalize images to 0-1 range
train_images = train_images / 255.0
test_images = test_images / 255.0
# Add channel dimension for grayscale
train_images = train_images[..., tf.newaxis]
test_images = test_images[..., tf.newaxis]
# Build a simple CNN model
model = models.Sequential([
    layers.Conv2D(32, (3,3), activation='relu', input_shape=(28,28,1)),
    layers.MaxPooling2D((2,2)),
    layers.Conv2D(64, (3,3), activation='relu'),
    layers.MaxPooling2D((2,2)),
    layers.Flatten(),
    layers.Dense(64, activation='relu'),
    layers.Dense(10, activation='softmax')
])
# Compile the model
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
# Train the model for 1 epoch
t0 = time.perf_counter()
history = model.fit(train_images, train_labels, epochs=1, validation_split=0.1)
fit_seconds = time.perf_counter() - t0
# Evaluate on test data
test_loss, test_acc = model.evaluate(test_images, test_labels)
print(f"Test accuracy: {test_acc:.4f}")
print(json.dumps({"fit_seconds": fit_seconds, "test_accuracy": float(test_acc),
                  "epochs_run": len(history.history["loss"])}))
