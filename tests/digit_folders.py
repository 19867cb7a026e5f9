"""Folders of class sub-folders made of scikit-learn's digits, as a user's own
images would be: PNG files in train/ and validation/, one folder per class."""

from PIL import Image

from experiments.lib import data


def write(root, digits, train_per_class=None, names=None):
  """Writes digits' images of the given classes as root/{train,validation}/<name>/.

  Args:
    root: A pathlib.Path.
    digits: The digits to include, e.g. range(5).
    train_per_class: At most this many training images per class.
    names: Folder names (default: 'digit_<d>').

  Returns:
    root, as a string.
  """
  source = data.load_source('digits')
  for split, folder in (('train', 'train'), ('eval', 'validation')):
    counts = {}
    for index, (image, label) in enumerate(source.read(split, 1, 0).as_numpy_iterator()):
      label = int(label)
      if label not in digits:
        continue
      counts[label] = counts.get(label, 0) + 1
      if split == 'train' and train_per_class and counts[label] > train_per_class:
        continue
      name = names[list(digits).index(label)] if names else f'digit_{label}'
      directory = root / folder / name
      directory.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(directory / f'{index}.png')
  return str(root)
