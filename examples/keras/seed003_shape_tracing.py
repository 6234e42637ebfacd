# Seed 003 ("Build a CNN and trace shapes"), exactly as the tutorial writes it (Keras 2's layer.output_shape);
# import lines swapped:
#   import tensorflow as tf; tf.keras.Sequential  ->  from cnnlab import keras; keras.Sequential
#   from tensorflow.keras.layers import ...       ->  from cnnlab.keras.layers import ...
from cnnlab import keras
from cnnlab.keras.layers import Conv2D, MaxPooling2D, Flatten, Dense
# Build a CNN and trace shapes through each layer
model = keras.Sequential([
# Input: 28x28x1 (grayscale image)
Conv2D(16, (3, 3), activation='relu', input_shape=(28, 28, 1)),
# Output: (28-3+1) x (28-3+1) x 16 = 26x26x16
MaxPooling2D((2, 2)),
# Output: 26//2 x 26//2 x 16 = 13x13x16
Conv2D(32, (3, 3), activation='relu'),
# Output: (13-3+1) x (13-3+1) x 32 = 11x11x32
MaxPooling2D((2, 2)),
# Output: 11//2 x 11//2 x 32 = 5x5x32
Conv2D(64, (3, 3), activation='relu'),
# Output: (5-3+1) x (5-3+1) x 64 = 3x3x64
Flatten(),
# Output: 3 * 3 * 64 = 576
Dense(128, activation='relu'),
# Output: 128
Dense(10, activation='softmax')
# Output: 10
])
# Print shapes at each layer
print(f"{'Layer':<25} {'Output Shape':<20} {'Params':>10}")
print("-" * 57)
for layer in model.layers:
    name = layer.name
    shape = str(layer.output_shape)
    params = layer.count_params()
    print(f"{name:<25} {shape:<20} {params:>10,}")
print(f"\nTotal parameters: {model.count_params():,}")
