# TensorFlow's "Transfer learning and fine-tuning" tutorial (tensorflow.org/tutorials/images/transfer_learning):
# MobileNetV2 pretrained on ImageNet, frozen, new head; then fine-tuned from layer 100 at a tenth of the rate.
# Imports swapped (import tensorflow as tf; tf.keras.X -> from cnnlab import keras; keras.X). Changed besides:
#   - the download: the cats-and-dogs folder (train/, validation/, one sub-folder a class) is read from
#     $CATS_AND_DOGS instead of tf.keras.utils.get_file(...);
#   - TensorFlow's own calls (outside the Keras API): tf.data.experimental.cardinality(ds) -> ds.cardinality(),
#     tf.data.AUTOTUNE -> -1, tf.expand_dims(x, 0) -> x[None], tf.where(p < 0.5, 0, 1) -> np.where(...);
#   - the plots are saved (plt.savefig) rather than only shown.
import os
import matplotlib.pyplot as plt
import numpy as np
from cnnlab import keras

PATH = os.environ.get("CATS_AND_DOGS", "cats_and_dogs_filtered")
train_dir = os.path.join(PATH, 'train')
validation_dir = os.path.join(PATH, 'validation')
BATCH_SIZE = 32
IMG_SIZE = (160, 160)
train_dataset = keras.utils.image_dataset_from_directory(train_dir, shuffle=True, batch_size=BATCH_SIZE,
                                                         image_size=IMG_SIZE)
validation_dataset = keras.utils.image_dataset_from_directory(validation_dir, shuffle=True,
                                                              batch_size=BATCH_SIZE, image_size=IMG_SIZE)
class_names = train_dataset.class_names
plt.figure(figsize=(10, 10))
for images, labels in train_dataset.take(1):
    for i in range(9):
        ax = plt.subplot(3, 3, i + 1)
        plt.imshow(images[i].numpy().astype("uint8"))
        plt.title(class_names[labels[i]])
        plt.axis("off")
plt.savefig("samples.png")
# The original has no test split: a fifth of the validation batches become the test set
val_batches = validation_dataset.cardinality()
test_dataset = validation_dataset.take(val_batches // 5)
validation_dataset = validation_dataset.skip(val_batches // 5)
print('Number of validation batches: %d' % validation_dataset.cardinality())
print('Number of test batches: %d' % test_dataset.cardinality())
AUTOTUNE = -1
train_dataset = train_dataset.prefetch(buffer_size=AUTOTUNE)
validation_dataset = validation_dataset.prefetch(buffer_size=AUTOTUNE)
test_dataset = test_dataset.prefetch(buffer_size=AUTOTUNE)
# Data augmentation, as layers (active in training only)
data_augmentation = keras.Sequential([
    keras.layers.RandomFlip('horizontal'),
    keras.layers.RandomRotation(0.2),
])
for image, _ in train_dataset.take(1):
    plt.figure(figsize=(10, 10))
    first_image = image[0]
    for i in range(9):
        ax = plt.subplot(3, 3, i + 1)
        augmented_image = data_augmentation(first_image[None])
        plt.imshow(augmented_image[0] / 255)
        plt.axis('off')
plt.savefig("augmented.png")
# MobileNetV2 expects pixels in [-1, 1]
preprocess_input = keras.applications.mobilenet_v2.preprocess_input
rescale = keras.layers.Rescaling(1./127.5, offset=-1)
# The base model, pretrained on ImageNet, without its classification head
IMG_SHAPE = IMG_SIZE + (3,)
base_model = keras.applications.MobileNetV2(input_shape=IMG_SHAPE, include_top=False, weights='imagenet')
image_batch, label_batch = next(iter(train_dataset))
feature_batch = base_model(image_batch)
print(feature_batch.shape)
# Feature extraction: freeze the base
base_model.trainable = False
base_model.summary()
global_average_layer = keras.layers.GlobalAveragePooling2D()
feature_batch_average = global_average_layer(feature_batch)
print(feature_batch_average.shape)
prediction_layer = keras.layers.Dense(1, activation='sigmoid')
prediction_batch = prediction_layer(feature_batch_average)
print(prediction_batch.shape)
inputs = keras.Input(shape=(160, 160, 3))
x = data_augmentation(inputs)
x = preprocess_input(x)
x = base_model(x, training=False)
x = global_average_layer(x)
x = keras.layers.Dropout(0.2)(x)
outputs = prediction_layer(x)
model = keras.Model(inputs, outputs)
model.summary()
print(len(model.trainable_variables))
keras.utils.plot_model(model, show_shapes=True)
base_learning_rate = 0.0001
model.compile(optimizer=keras.optimizers.Adam(learning_rate=base_learning_rate),
              loss=keras.losses.BinaryCrossentropy(),
              metrics=[keras.metrics.BinaryAccuracy(threshold=0.5, name='accuracy')])
initial_epochs = 10
loss0, accuracy0 = model.evaluate(validation_dataset)
print("initial loss: {:.2f}".format(loss0))
print("initial accuracy: {:.2f}".format(accuracy0))
history = model.fit(train_dataset, epochs=initial_epochs, validation_data=validation_dataset)
acc = history.history['accuracy']
val_acc = history.history['val_accuracy']
loss = history.history['loss']
val_loss = history.history['val_loss']
# Fine-tuning: unfreeze the top of the base model
base_model.trainable = True
print("Number of layers in the base model: ", len(base_model.layers))
fine_tune_at = 100
for layer in base_model.layers[:fine_tune_at]:
    layer.trainable = False
model.compile(loss=keras.losses.BinaryCrossentropy(),
              optimizer=keras.optimizers.RMSprop(learning_rate=base_learning_rate/10),
              metrics=[keras.metrics.BinaryAccuracy(threshold=0.5, name='accuracy')])
model.summary()
print(len(model.trainable_variables))
fine_tune_epochs = 10
total_epochs = initial_epochs + fine_tune_epochs
history_fine = model.fit(train_dataset, epochs=total_epochs, initial_epoch=len(history.epoch),
                         validation_data=validation_dataset)
acc += history_fine.history['accuracy']
val_acc += history_fine.history['val_accuracy']
plt.figure(figsize=(8, 8))
plt.subplot(2, 1, 1)
plt.plot(acc, label='Training Accuracy')
plt.plot(val_acc, label='Validation Accuracy')
plt.plot([initial_epochs-1, initial_epochs-1], plt.ylim(), label='Start Fine Tuning')
plt.legend(loc='lower right')
plt.savefig("curves.png")
loss, accuracy = model.evaluate(test_dataset)
print('Test accuracy :', accuracy)
image_batch, label_batch = test_dataset.as_numpy_iterator().next()
predictions = model.predict_on_batch(image_batch).flatten()
predictions = np.where(predictions < 0.5, 0, 1)
print('Predictions:\n', predictions)
print('Labels:\n', label_batch)
