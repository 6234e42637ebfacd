# Seed 003 ("Common Mistakes: Not Reshaping Input for Conv2D"), as the tutorial writes it; imports swapped:
#   import tensorflow as tf; tf.keras.X  ->  from cnnlab import keras; keras.X
# The mistake fails with one line naming the shape received, the shape expected and the fix (Keras fails
# deep in its backend); then the tutorial's fix trains.
from cnnlab import keras
from cnnlab.errors import CnnlabError
from cnnlab.keras.layers import Conv2D, Flatten, Dense
import numpy as np
# MNIST images are (60000, 28, 28) but Conv2D expects (60000, 28, 28, 1)
(X_train, y_train), _ = keras.datasets.mnist.load_data()
model = keras.Sequential([
Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
Flatten(), Dense(10, activation='softmax'),  # the tutorial's "# ..."
])
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
try:
    model.fit(X_train, y_train) # Error: shape mismatch
except CnnlabError as error:
    print(f"error: {error}")
# Add the channel dimension
X_train = X_train.reshape(-1, 28, 28, 1).astype('float32') / 255.0
# Or use np.expand_dims
X_train = np.expand_dims(X_train[..., 0], axis=-1).astype('float32')
# Now shape is (60000, 28, 28, 1) -- correct for Conv2D
model.fit(X_train, y_train)
