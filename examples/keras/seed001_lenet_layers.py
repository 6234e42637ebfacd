# Seed 001, exactly as the tutorial writes it; import line swapped:
#   from tensorflow.keras import layers, models  ->  from cnnlab.keras import layers, models
from cnnlab.keras import layers, models
# Scenario: Building LeNet-5 for MNIST (28x28 grayscale images)
# The data arrives as 3D Tensors: (BatchSize, 28, 28, 1)
model = models.Sequential()
# Layer 1: Detect basic edges. Outputs a (26x26x32) Volume.
model.add(layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)))
# Compression: Shrinks the image from 26x26 to 13x13.
model.add(layers.MaxPooling2D((2, 2)))
# Layer 2: Detect complex shapes (circles, loops).
# Increases depth to 64 filters.
model.add(layers.Conv2D(64, (3, 3), activation='relu'))
model.add(layers.MaxPooling2D((2, 2)))
# The transition: We finally crush the 3D volume into 1D
# to feed it into the final decision-making Dense brain.
model.add(layers.Flatten())
model.add(layers.Dense(64, activation='relu'))
model.add(layers.Dense(10, activation='softmax')) # Detect digits 0-9
