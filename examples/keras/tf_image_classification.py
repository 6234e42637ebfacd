# TensorFlow's "Image classification" tutorial (tensorflow.org/tutorials/images/classification): a small CNN
# on a folder of flower photos with image_dataset_from_directory, Rescaling, then data augmentation layers
# and Dropout against overfitting. Imports swapped (import tensorflow as tf; tf.keras.X -> keras.X;
# from tensorflow import keras / from tensorflow.keras import ... -> from cnnlab ...). Changed besides:
#   - the downloads: the flowers folder (one sub-folder a class) is $FLOWERS instead of get_file(...), and
#     the photo predicted at the end is $PHOTO instead of the sunflower URL;
#   - TensorFlow's own calls: tf.data.AUTOTUNE -> -1, tf.expand_dims(x, 0) -> x[None],
#     tf.nn.softmax(p) -> np.exp(p) / np.exp(p).sum();
#   - the plots are saved (plt.savefig); the TFLite conversion at the tutorial's end is left out.
import os
import pathlib
import matplotlib.pyplot as plt
import numpy as np
from cnnlab import keras
from cnnlab.keras import layers
from cnnlab.keras.models import Sequential

data_dir = pathlib.Path(os.environ.get("FLOWERS", "flower_photos"))
image_count = len(list(data_dir.glob('*/*.jpg'))) + len(list(data_dir.glob('*/*.JPEG')))
print(image_count)
batch_size = 32
img_height = 180
img_width = 180
train_ds = keras.utils.image_dataset_from_directory(
    data_dir, validation_split=0.2, subset="training", seed=123,
    image_size=(img_height, img_width), batch_size=batch_size)
val_ds = keras.utils.image_dataset_from_directory(
    data_dir, validation_split=0.2, subset="validation", seed=123,
    image_size=(img_height, img_width), batch_size=batch_size)
class_names = train_ds.class_names
print(class_names)
plt.figure(figsize=(10, 10))
for images, labels in train_ds.take(1):
    for i in range(9):
        ax = plt.subplot(3, 3, i + 1)
        plt.imshow(images[i].numpy().astype("uint8"))
        plt.title(class_names[labels[i]])
        plt.axis("off")
plt.savefig("flowers.png")
for image_batch, labels_batch in train_ds:
    print(image_batch.shape)
    print(labels_batch.shape)
    break
AUTOTUNE = -1
train_ds = train_ds.cache().shuffle(1000).prefetch(buffer_size=AUTOTUNE)
val_ds = val_ds.cache().prefetch(buffer_size=AUTOTUNE)
normalization_layer = layers.Rescaling(1./255)
normalized_ds = train_ds.map(lambda x, y: (normalization_layer(x), y))
image_batch, labels_batch = next(iter(normalized_ds))
first_image = image_batch[0]
# Notice the pixel values are now in `[0,1]`.
print(np.min(first_image), np.max(first_image))
num_classes = len(class_names)
model = Sequential([
    layers.Rescaling(1./255, input_shape=(img_height, img_width, 3)),
    layers.Conv2D(16, 3, padding='same', activation='relu'),
    layers.MaxPooling2D(),
    layers.Conv2D(32, 3, padding='same', activation='relu'),
    layers.MaxPooling2D(),
    layers.Conv2D(64, 3, padding='same', activation='relu'),
    layers.MaxPooling2D(),
    layers.Flatten(),
    layers.Dense(128, activation='relu'),
    layers.Dense(num_classes)
])
model.compile(optimizer='adam',
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])
model.summary()
epochs = 10
history = model.fit(train_ds, validation_data=val_ds, epochs=epochs)
# Overfitting: data augmentation and Dropout
data_augmentation = keras.Sequential([
    layers.RandomFlip("horizontal", input_shape=(img_height, img_width, 3)),
    layers.RandomRotation(0.1),
    layers.RandomZoom(0.1),
])
plt.figure(figsize=(10, 10))
for images, _ in train_ds.take(1):
    for i in range(9):
        augmented_images = data_augmentation(images)
        ax = plt.subplot(3, 3, i + 1)
        plt.imshow(augmented_images[0].numpy().astype("uint8"))
        plt.axis("off")
plt.savefig("augmented.png")
model = Sequential([
    data_augmentation,
    layers.Rescaling(1./255),
    layers.Conv2D(16, 3, padding='same', activation='relu'),
    layers.MaxPooling2D(),
    layers.Conv2D(32, 3, padding='same', activation='relu'),
    layers.MaxPooling2D(),
    layers.Conv2D(64, 3, padding='same', activation='relu'),
    layers.MaxPooling2D(),
    layers.Dropout(0.2),
    layers.Flatten(),
    layers.Dense(128, activation='relu'),
    layers.Dense(num_classes, name="outputs")
])
model.compile(optimizer='adam',
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])
model.summary()
epochs = 15
history = model.fit(train_ds, validation_data=val_ds, epochs=epochs)
acc = history.history['accuracy']
val_acc = history.history['val_accuracy']
epochs_range = range(epochs)
plt.figure(figsize=(8, 8))
plt.plot(epochs_range, acc, label='Training Accuracy')
plt.plot(epochs_range, val_acc, label='Validation Accuracy')
plt.legend(loc='lower right')
plt.savefig("curves.png")
# Predict on new data
sunflower_path = os.environ.get("PHOTO", "Red_sunflower.jpg")
img = keras.utils.load_img(sunflower_path, target_size=(img_height, img_width))
img_array = keras.utils.img_to_array(img)
img_array = img_array[None] # Create a batch
predictions = model.predict(img_array)
score = np.exp(predictions[0]) / np.exp(predictions[0]).sum()
print(
    "This image most likely belongs to {} with a {:.2f} percent confidence."
    .format(class_names[np.argmax(score)], 100 * np.max(score))
)
