# Seed 003's BatchNorm CIFAR-10 program ("Code Examples" in ../shared/seeds/003*.txt) verbatim, in
# tf.keras syntax (the loop body re-indented: the seed text lost its indentation). Added lines, the
# same for every backend: the seed from $BENCH_SEED, the smoke size from $BENCH_SMALL (a few hundred
# images, 1 epoch), a cap on the epochs from $BENCH_EPOCHS (a per-epoch speed sitting; default the
# program's 100), fit's wall time and one JSON line at the end. keras_side_by_side.py swaps only
# the imports per backend.
import json
import os
import time

import tensorflow as tf
from tensorflow.keras.layers import Conv2D, MaxPooling2D, Dense, Flatten, Dropout, BatchNormalization
from tensorflow.keras.callbacks import EarlyStopping, ReduceLROnPlateau
import numpy as np  # noqa: F401

tf.keras.utils.set_random_seed(int(os.environ.get("BENCH_SEED", "0")))
SMALL = os.environ.get("BENCH_SMALL") == "1"
# Load CIFAR-10 dataset (60,000 32x32 color images, 10 classes)
(X_train, y_train), (X_test, y_test) = tf.keras.datasets.cifar10.load_data()
if SMALL:  # smoke run: a few hundred images, 1 epoch
    X_train, y_train, X_test, y_test = X_train[:600], y_train[:600], X_test[:200], y_test[:200]
class_names = ['airplane', 'automobile', 'bird', 'cat', 'deer',
'dog', 'frog', 'horse', 'ship', 'truck']
print(f"Training shape: {X_train.shape}") # (50000, 32, 32, 3)
print(f"Test shape: {X_test.shape}") # (10000, 32, 32, 3)
# Normalize to [0, 1]
X_train = X_train.astype('float32') / 255.0
X_test = X_test.astype('float32') / 255.0
# Build CNN
model = tf.keras.Sequential([
# Block 1
Conv2D(32, (3, 3), activation='relu', padding='same', input_shape=(32, 32, 3)),
BatchNormalization(),
Conv2D(32, (3, 3), activation='relu', padding='same'),
BatchNormalization(),
MaxPooling2D((2, 2)),
Dropout(0.25),
# Block 2
Conv2D(64, (3, 3), activation='relu', padding='same'),
BatchNormalization(),
Conv2D(64, (3, 3), activation='relu', padding='same'),
BatchNormalization(),
MaxPooling2D((2, 2)),
Dropout(0.25),
# Block 3
Conv2D(128, (3, 3), activation='relu', padding='same'),
BatchNormalization(),
Conv2D(128, (3, 3), activation='relu', padding='same'),
BatchNormalization(),
MaxPooling2D((2, 2)),
Dropout(0.25),
# Classification head
Flatten(),
Dense(256, activation='relu'),
BatchNormalization(),
Dropout(0.5),
Dense(10, activation='softmax')
])
model.compile(
optimizer=tf.keras.optimizers.Adam(learning_rate=0.001),
loss='sparse_categorical_crossentropy',
metrics=['accuracy']
)
model.summary()
callbacks = [
EarlyStopping(monitor='val_loss', patience=10, restore_best_weights=True),
ReduceLROnPlateau(monitor='val_loss', factor=0.5, patience=5, min_lr=1e-6)
]
t0 = time.perf_counter()
history = model.fit(
X_train, y_train,
epochs=1 if SMALL else int(os.environ.get("BENCH_EPOCHS", "100")),
batch_size=64,
validation_split=0.1,
callbacks=callbacks
)
fit_seconds = time.perf_counter() - t0
test_loss, test_acc = model.evaluate(X_test, y_test, verbose=0)
print(f"\nTest accuracy: {test_acc:.4f}")
# Predict on samples
predictions = model.predict(X_test[:5])
for i in range(5):
    pred = class_names[predictions[i].argmax()]
    actual = class_names[y_test[i][0]]
    print(f"Predicted: {pred}, Actual: {actual}")
print(json.dumps({"fit_seconds": fit_seconds, "test_accuracy": float(test_acc),
                  "epochs_run": len(history.history["loss"])}))
