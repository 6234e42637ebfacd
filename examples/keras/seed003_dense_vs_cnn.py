# Seed 003 ("What Is It?"), exactly as the tutorial writes it; import lines swapped:
#   import tensorflow as tf; tf.keras.Sequential  ->  from cnnlab import keras; keras.Sequential
#   from tensorflow.keras.layers import ...       ->  from cnnlab.keras.layers import ...
# A CNN processes images differently from a Dense network
# Dense network: flatten 28x28 image to 784 features (loses spatial info)
# CNN: process 28x28 image directly, preserving spatial relationships
from cnnlab import keras
from cnnlab.keras.layers import Conv2D, MaxPooling2D, Flatten, Dense
# CNN input keeps the 2D structure
model = keras.Sequential([
Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
MaxPooling2D((2, 2)),
Flatten(),
Dense(64, activation='relu'),
Dense(10, activation='softmax')
])
