# Seed 002, step 7, exactly as the tutorial writes it; import lines swapped:
#   import tensorflow as tf  ->  from cnnlab import keras (unused here: the tutorial imports it too)
#   from tensorflow.keras import layers, models  ->  from cnnlab.keras import layers, models
from cnnlab import keras  # noqa: F401
from cnnlab.keras import layers, models
model = models.Sequential([ layers.Conv2D(32, (3,3), activation='relu', input_shape=(28,28,1)), layers.MaxPooling2D((2,2)), layers.Conv2D(64, (3,3), activation='relu'), layers.MaxPooling2D((2,2)), layers.Flatten(), layers.Dense(64, activation='relu'), layers.Dense(10, activation='softmax') ])  # noqa: E501
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
# model.summary() shows architecture
# Training example (assuming train_images and train_labels are ready):
# model.fit(train_images, train_labels, epochs=5)
