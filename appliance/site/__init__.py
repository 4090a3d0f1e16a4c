"""What the web site asks of the core: tokens, staff users, the study catalogue, downloads, pictures, audit."""
