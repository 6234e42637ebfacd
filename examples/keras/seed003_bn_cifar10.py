# Seed 003 ("Code Examples": the BatchNorm CIFAR-10 CNN), exactly as the tutorial writes it; imports swapped:
#   import tensorflow as tf; tf.keras.X           ->  from cnnlab import keras; keras.X
#   from tensorflow.keras.layers/callbacks import ...  ->  from cnnlab.keras.layers/callbacks import ...
from cnnlab import keras
from cnnlab.keras.layers import Conv2D, MaxPooling2D, Dense, Flatten, Dropout, BatchNormalization
from cnnlab.keras.callbacks import EarlyStopping, ReduceLROnPlateau
import numpy as np  # noqa: F401
# Load CIFAR-10 dataset (60,000 32x32 color images, 10 classes)
(X_train, y_train), (X_test, y_test) = keras.datasets.cifar10.load_data()
class_names = ['airplane', 'automobile', 'bird', 'cat', 'deer',
'dog', 'frog', 'horse', 'ship', 'truck']
print(f"Training shape: {X_train.shape}") # (50000, 32, 32, 3)
print(f"Test shape: {X_test.shape}") # (10000, 32, 32, 3)
# Normalize to [0, 1]
X_train = X_train.astype('float32') / 255.0
X_test = X_test.astype('float32') / 255.0
# Build CNN
model = keras.Sequential([
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
optimizer=keras.optimizers.Adam(learning_rate=0.001),
loss='sparse_categorical_crossentropy',
metrics=['accuracy']
)
model.summary()
callbacks = [
EarlyStopping(monitor='val_loss', patience=10, restore_best_weights=True),
ReduceLROnPlateau(monitor='val_loss', factor=0.5, patience=5, min_lr=1e-6)
]
history = model.fit(
X_train, y_train,
epochs=100,
batch_size=64,
validation_split=0.1,
callbacks=callbacks
)
test_loss, test_acc = model.evaluate(X_test, y_test, verbose=0)
print(f"\nTest accuracy: {test_acc:.4f}")
# Predict on samples
predictions = model.predict(X_test[:5])
for i in range(5):
    pred = class_names[predictions[i].argmax()]
    actual = class_names[y_test[i][0]]
    print(f"Predicted: {pred}, Actual: {actual}")
