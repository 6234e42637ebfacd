# Seed 003 ("Standard CNN Architecture"), exactly as the tutorial writes it; import lines swapped:
#   import tensorflow as tf; tf.keras.X  ->  from cnnlab import keras; keras.X
from cnnlab import keras
from cnnlab.keras.layers import Conv2D, MaxPooling2D, Flatten, Dense
model = keras.Sequential([
# Block 1: learn low-level features (edges, textures)
Conv2D(32, (3, 3), activation='relu', padding='same', input_shape=(32, 32, 3)),
Conv2D(32, (3, 3), activation='relu', padding='same'),
MaxPooling2D((2, 2)), # 32x32 -> 16x16
# Block 2: learn mid-level features (parts, patterns)
Conv2D(64, (3, 3), activation='relu', padding='same'),
Conv2D(64, (3, 3), activation='relu', padding='same'),
MaxPooling2D((2, 2)), # 16x16 -> 8x8
# Block 3: learn high-level features (objects)
Conv2D(128, (3, 3), activation='relu', padding='same'),
Conv2D(128, (3, 3), activation='relu', padding='same'),
MaxPooling2D((2, 2)), # 8x8 -> 4x4
# Classification head
Flatten(), # 4x4x128 = 2048
Dense(256, activation='relu'),
keras.layers.Dropout(0.5),
Dense(10, activation='softmax')
])
