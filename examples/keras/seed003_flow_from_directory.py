# Seed 003 ("Data augmentation": ImageDataGenerator + flow_from_directory for training, rescaling only for
# validation), as the tutorial writes it; imports swapped:
#   from tensorflow.keras.preprocessing.image import ...  ->  from cnnlab.keras.preprocessing.image import ...
# The tutorial stops at the generators; the lines after them (a small CNN fit on the generators, as its
# other examples build one) show them in use.
from cnnlab.keras.preprocessing.image import ImageDataGenerator
from cnnlab.keras import layers, models
# Create augmentation pipeline
train_datagen = ImageDataGenerator(
    rescale=1./255, # Normalize pixel values
    rotation_range=20, # Random rotation up to 20 degrees
    width_shift_range=0.2, # Random horizontal shift
    height_shift_range=0.2, # Random vertical shift
    horizontal_flip=True, # Random horizontal flip
    zoom_range=0.2, # Random zoom
    shear_range=0.15, # Random shear
    fill_mode='nearest' # How to fill new pixels after transforms
)
# Validation data should NOT be augmented, only rescaled
val_datagen = ImageDataGenerator(rescale=1./255)
# Load images from directory
train_generator = train_datagen.flow_from_directory(
    'data/train',
    target_size=(224, 224),
    batch_size=32,
    class_mode='binary'
)
val_generator = val_datagen.flow_from_directory(
    'data/validation',
    target_size=(224, 224),
    batch_size=32,
    class_mode='binary'
)
print(train_generator.class_indices)
model = models.Sequential([
    layers.Conv2D(16, (3, 3), activation='relu', input_shape=(224, 224, 3)),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(32, (3, 3), activation='relu'),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation='relu'),
    layers.GlobalAveragePooling2D(),
    layers.Dense(1, activation='sigmoid')
])
model.compile(optimizer='adam', loss='binary_crossentropy', metrics=['accuracy'])
history = model.fit(train_generator, epochs=5, validation_data=val_generator)
val_loss, val_acc = model.evaluate(val_generator)
print(f"Validation accuracy: {val_acc:.4f}")
