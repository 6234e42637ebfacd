# Seed 003 ("Transfer learning with VGG16": freeze, new head, fine-tune the top at 1e-5), exactly as the
# tutorial writes it; imports swapped:
#   import tensorflow as tf; tf.keras.X                        ->  from cnnlab import keras; keras.X
#   from tensorflow.keras.applications/layers/callbacks/...    ->  from cnnlab.keras.applications/...
# and its two TensorFlow calls `tf.size(w).numpy()` (TensorFlow itself, outside the Keras API) read
# `w.numpy().size`. VGG16(weights='imagenet') reads Keras's own ImageNet file from ~/.keras/models.
from cnnlab import keras
from cnnlab.keras.applications import VGG16
from cnnlab.keras.layers import Dense, Flatten, Dropout, GlobalAveragePooling2D  # noqa: F401
from cnnlab.keras import Model
from cnnlab.keras.callbacks import EarlyStopping
import numpy as np
# Load VGG16 pre-trained on ImageNet (without classification head)
base_model = VGG16(
    weights='imagenet',
    include_top=False, # Exclude the top Dense layers
    input_shape=(128, 128, 3) # Our input size
)
# Freeze all layers in the base model
base_model.trainable = False
print(f"VGG16 layers: {len(base_model.layers)}")
print(f"VGG16 trainable params: {base_model.count_params():,}")
print(f"VGG16 trainable after freeze: "
      f"{sum(w.numpy().size for w in base_model.trainable_weights)}")
# Add custom classification head
x = base_model.output
x = GlobalAveragePooling2D()(x) # Better than Flatten for transfer learning
x = Dense(256, activation='relu')(x)
x = Dropout(0.5)(x)
output = Dense(1, activation='sigmoid')(x) # Binary: cat (0) or dog (1)
model = Model(inputs=base_model.input, outputs=output)
model.compile(
    optimizer=keras.optimizers.Adam(learning_rate=0.001),
    loss='binary_crossentropy',
    metrics=['accuracy']
)
# Show trainable vs non-trainable params
trainable_count = sum(w.numpy().size for w in model.trainable_weights)
non_trainable_count = sum(w.numpy().size for w in model.non_trainable_weights)
print(f"\nTotal params: {model.count_params():,}")
print(f"Trainable params: {trainable_count:,}")
print(f"Non-trainable (frozen) params: {non_trainable_count:,}")
# Generate dummy data for demonstration (in practice, load real images)
np.random.seed(42)
X_train = np.random.rand(500, 128, 128, 3).astype('float32')
y_train = np.random.randint(0, 2, 500)
X_val = np.random.rand(100, 128, 128, 3).astype('float32')
y_val = np.random.randint(0, 2, 100)
# Phase 1: Train only the custom head
print("\n=== Phase 1: Training classification head ===")
history = model.fit(
    X_train, y_train,
    epochs=10,
    batch_size=32,
    validation_data=(X_val, y_val),
    callbacks=[EarlyStopping(monitor='val_loss', patience=3, restore_best_weights=True)]
)
# Phase 2: Fine-tune the top layers of VGG16
print("\n=== Phase 2: Fine-tuning top VGG16 layers ===")
base_model.trainable = True
# Freeze all layers except the last 4 convolutional layers
for layer in base_model.layers[:-4]:
    layer.trainable = False
# Recompile with a much lower learning rate
model.compile(
    optimizer=keras.optimizers.Adam(learning_rate=1e-5),
    loss='binary_crossentropy',
    metrics=['accuracy']
)
history_fine = model.fit(
    X_train, y_train,
    epochs=10,
    batch_size=32,
    validation_data=(X_val, y_val),
    callbacks=[EarlyStopping(monitor='val_loss', patience=3, restore_best_weights=True)]
)
print(f"\nFinal validation accuracy: {history_fine.history['val_accuracy'][-1]:.4f}")
