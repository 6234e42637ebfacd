# Seed 003 ("Conv2D in Keras", "Pooling Layers"), exactly as the tutorial writes them; import lines swapped:
#   from tensorflow.keras.layers import ...  ->  from cnnlab.keras.layers import ...
from cnnlab.keras.layers import Conv2D
# Conv2D(filters, kernel_size, strides, padding, activation)
layer = Conv2D(
filters=32, # Number of filters (output feature maps)
kernel_size=(3, 3), # Size of each filter
strides=(1, 1), # Step size (default is 1)
padding='valid', # 'valid' (no padding) or 'same' (zero padding)
activation='relu', # Activation function
input_shape=(28, 28, 1) # Height, Width, Channels
)
from cnnlab.keras.layers import MaxPooling2D, AveragePooling2D
# Max Pooling: takes the maximum value in each pool window
# Most common: 2x2 pool with stride 2, reduces dimensions by half
max_pool = MaxPooling2D(pool_size=(2, 2)) # 26x26 becomes 13x13
# Average Pooling: takes the average value in each pool window
average_pool = AveragePooling2D(pool_size=(2, 2))
