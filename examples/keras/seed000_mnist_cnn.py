# Seed 000, exactly as the tutorial writes it, with its imports swapped for cnnlab's:
#   import tensorflow as tf               ->  from cnnlab import keras
#   from tensorflow.keras import layers, models  ->  from cnnlab.keras import layers, models
#   tf.keras.datasets / tf.newaxis        ->  keras.datasets / None
from cnnlab import keras
from cnnlab.keras import layers, models
# Load sample data: MNIST handwritten digits
(train_images, train_labels), (test_images, test_labels) = keras.datasets.mnist.load_data()
# Normalize images to 0-1 range
train_images = train_images / 255.0
test_images = test_images / 255.0
# Add channel dimension for grayscale
train_images = train_images[..., None]
test_images = test_images[..., None]
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
history = model.fit(train_images, train_labels, epochs=1, validation_split=0.1)
# Evaluate on test data
test_loss, test_acc = model.evaluate(test_images, test_labels)
print(f"Test accuracy: {test_acc:.4f}")
